"""Options of UniSID (its sections 3.1-3.5, appendix A.3): the fields of `TokenizeConfig.unisid_options`.

L and K are the tokenize stage's `levels` and `codebook_size` (the paper: 3 x 2,048), the seed is its `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.errors import ConfigError, check_numbers
from align3gr.options import TINY, ModelOptions
from align3gr.training_args import TrainerArgs, check_training_args, training_args_field

UNISID_APPLIED = ("report_to", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon")
"""The Transformers training arguments UniSID's own loop applies (`training_args`)."""


def tracker_names() -> list[str]:
    """The `report_to` values of UniSID's loop: Accelerate's experiment trackers."""
    from accelerate.utils import LoggerType

    return ["none", *(tracker.value for tracker in LoggerType)]


@dataclass
class UniSIDConfig(ModelOptions):
    """Qwen2.5-VL backbone with SID tokens and an embedding token, SID / embedding / reconstruction heads, Eq. 11.
    `model` is a Qwen2.5-VL checkpoint (or 'tiny'); LoRA never touches the frozen vision tower."""

    option_prefix = "unisid_options."
    trainer_args = TrainerArgs(
        "transformers:TrainingArguments",
        fixed={"seed": "the tokenize section's seed seeds UniSID"},
        renamed={
            "num_train_epochs": "epochs",
            "per_device_train_batch_size": "batch_size",
            "warmup_steps": "warmup_ratio",
        },
        applied=UNISID_APPLIED,
        loop="UniSID trains in a loop of its own (torch AdamW, cosine schedule), not a Trainer",
        reporters=tracker_names,
    )

    tiny_vision_depth: int = field(default=1, metadata={"help": "model=tiny: vision-tower blocks."})
    embedding_dim: int = field(default=128, metadata={"help": "Output size of the embedding head (Eq. 3)."})
    temperature: float = field(default=0.1, metadata={"help": "Temperature tau of Eq. 5 and Eq. 6."})
    multi_granularity: bool = field(
        default=True,
        metadata={"help": "Eq. 5's positives by category depth (near-universal categories dropped); off: UniSID "
                  "Table 5's baseline, InfoNCE at every level (only the item's other view is a positive)."},
    )  # fmt: skip
    reconstruction_weight: float = field(
        default=0.1, metadata={"help": "lambda of Eq. 11 (paper: 0.1); 0 drops the summary reconstruction."}
    )
    reconstruction_model: str = field(
        default=TINY,
        metadata={"help": "Frozen causal LM that reconstructs the summary (paper: Qwen2.5-3B), or 'tiny': a random "
                  "one that knows no language, so Eq. 10 adds nothing (a warning says so)."},
    )  # fmt: skip
    summary_model: str | None = field(
        default=None,
        metadata={"help": "Local causal LM folder that summarises the attributes offline (Eq. 7); none: a template."},
    )
    summary_max_new_tokens: int = field(default=64, metadata={"help": "Length limit of an LLM-written summary."})
    summary_cache: str | None = field(
        default=None,
        metadata={
            "help": "LLM-written summaries cache (default texts/ under $ALIGN3GR_CACHE or ~/.cache/align3gr).",
            "fingerprint": None,  # where summaries are cached, not what they are: step keys leave it out
        },
    )
    image_attribute: str = field(
        default="image",
        metadata={"help": "Item attribute holding the image: a local file path, relative to the dataset folder."},
    )
    max_description_words: int = field(default=128, metadata={"help": "Descriptions are cut to this many words."})
    view_dropout: float = field(
        default=0.3, metadata={"help": "Second view: each description word dropped with this probability."}
    )
    batch_size: int = field(default=64, metadata={"help": "Items per step over all processes (two views each)."})
    epochs: int = field(default=10, metadata={"help": "Passes over the catalogue."})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW peak learning rate (paper: 4e-5 for Qwen2.5-VL-3B)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps with linear warm-up (cosine)."})
    encode_batch_size: int = field(default=64, metadata={"help": "Items per forward when writing the codes."})
    training_args: dict = training_args_field(
        "Training arguments of Transformers by their own names that UniSID's own loop applies: "
        + ", ".join(UNISID_APPLIED)
        + " (report_to through Accelerate's trackers; max_grad_norm clips only when given)."
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        ModelOptions.validate(self)
        self.training_args = check_training_args(type(self), self.training_args, self.option_prefix + "training_args")
        for name in (
            "tiny_vision_depth", "embedding_dim", "summary_max_new_tokens", "max_description_words", "batch_size",
            "epochs", "encode_batch_size",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.option_prefix}{name}={getattr(self, name)}: must be >= 1")
        check_numbers(self, ("temperature", "learning_rate"), positive=True, prefix=self.option_prefix)
        check_numbers(self, ("reconstruction_weight", "weight_decay"), prefix=self.option_prefix)
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"{self.option_prefix}warmup_ratio={self.warmup_ratio}: expected a share, 0 to 1")
        if not 0 <= self.view_dropout < 1:
            raise ConfigError(f"{self.option_prefix}view_dropout={self.view_dropout}: expected 0 <= p < 1")
        if self.tiny_hidden_size % 16:
            raise ConfigError(f"{self.option_prefix}tiny_hidden_size={self.tiny_hidden_size}: must be a multiple of 16")
