"""Options of the `evaluate` stage (Align3GR, "Evaluation Metrics": Recall/NDCG@5/10, beam width 20)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.config import OMITTED
from align3gr.decode import BEAM_SIZE, DECODERS, check_decoder_width
from align3gr.errors import ConfigError
from align3gr.metrics import check_ks
from align3gr.models import DTYPES

SPLITS = ("valid", "test")


@dataclass
class EvaluateConfig:
    """Which users, which decoder, which cut-offs; every user of the split is evaluated."""

    section = "evaluate"

    split: str = field(
        default="test", metadata={"help": "valid (model selection) or test (reporting).", "choices": SPLITS}
    )
    decoder: str = field(
        default="beam_search",
        metadata={
            "help": "How items are ranked (unconstrained: free SCID generation, for the valid rate).",
            "choices": DECODERS,
        },
    )
    beam_size: int = field(
        default=BEAM_SIZE, metadata={"help": f"Beam width = length of each ranked list (paper: {BEAM_SIZE})."}
    )
    exclude_history: bool = field(
        default=True,
        metadata={
            "help": "Rank only items outside the user's whole history before the target (RecBole's full ranking); "
            "exact: the constrained decoders never return them."
        },
    )
    ks: list[int] = field(default_factory=lambda: [5, 10], metadata={"help": "Cut-offs K of Recall@K and NDCG@K."})
    batch_size: int = field(default=16, metadata={"help": "Users decoded together."})
    with_user_scid: bool | None = field(
        default=None, metadata={"help": "Put the user's SCID in prompts; unset: as the model was trained (meta.json)."}
    )
    paraphrase: int = field(default=0, metadata={"help": "Which paraphrase of the sequential-task prompt to use."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype for inference.", "choices": tuple(DTYPES)})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run model code shipped with the checkpoint or its base (a pipeline sets it as sft's).",
            "fingerprint": OMITTED,
        },
    )
    text_examples: int = field(
        default=0, metadata={"help": "Users for which to generate the next title and preference text (greedy)."}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of the generated texts."})

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split={self.split!r}: expected 'valid' or 'test'")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder={self.decoder!r}: expected one of {', '.join(DECODERS)}")
        check_decoder_width(self.decoder, self.beam_size)
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.text_examples < 0:
            raise ConfigError(f"text_examples must be >= 0, got {self.text_examples}")
        self.ks = check_ks(self.ks)
        if self.beam_size < max(self.ks):
            raise ConfigError(
                f"beam_size={self.beam_size} is below the largest cut-off K={max(self.ks)}: each ranked list holds "
                "beam_size items, so Recall/NDCG@K would be those at beam_size; raise beam_size or lower ks"
            )
