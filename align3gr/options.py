"""Options shared by several stages, each declared, defaulted and validated once and composed into the stages'
configs by inheritance (as TRL composes `SFTConfig` from `TrainingArguments`), so each YAML section stays flat.

- `TrainingOptions`: the trainer arguments of every TRL training stage (`sft`, each `dpo` stage);
- `ModelOptions`: the base model and its LoRA adapters, of the stages that fine-tune an LLM (`sft`, UniSID in
  `tokenize`).

A stage that needs another default for a shared option overrides the field with `with_default`, which keeps the
option's help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from align3gr.errors import ConfigError, check_numbers
from align3gr.models import DTYPES
from align3gr.models.lora import LORA_TARGETS
from align3gr.training_args import check_training_args, training_args_field

TINY = "tiny"
"""The `model` value that builds a small model from the dataset's own text instead of loading one."""


def with_default(options: type, name: str, default: Any) -> Any:
    """The field `name` of the shared `options` class with a stage's own default: a subclass field override that
    keeps the option's help, so the option is still declared once."""
    return field(default=default, metadata=options.__dataclass_fields__[name].metadata)


@dataclass
class TrainingOptions:
    """The TRL trainer arguments every training stage sets from its config (`align3gr.training.trainer_arguments`);
    the defaults are SFT's. Any other argument of the stage's TRL config goes in `training_args`, checked against
    that config (the stage's `trainer_args`, `align3gr.training_args`)."""

    learning_rate: float = field(
        default=1e-3, metadata={"help": "AdamW peak learning rate (Align3GR's SFT: 1e-3, 5e-4 or 1e-4)."}
    )
    warmup_steps: float = field(default=0.03, metadata={"help": "Warm-up steps, or a fraction of all steps if < 1."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training rows per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per update."})
    num_train_epochs: float = field(
        default=1.0,
        metadata={"help": "Epochs over the stage's training rows (in dpo: each stage's), if max_steps < 0."},
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimiser updates (in dpo: per stage); -1: num_train_epochs."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bfloat16 mixed precision; default: on GPUs that compute in it natively."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N updates."})
    save_steps: int = field(
        default=500,
        metadata={"help": "Checkpoint every N updates, so a killed run resumes (SFT also evaluates then)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of paraphrases, sampling, initialisation and shuffling."})
    training_args: dict[str, Any] = training_args_field(
        "Other arguments of the stage's TRL config (sft: SFTConfig, dpo: DPOConfig) by their own names, passed "
        "unchanged, e.g. {optim: adafactor, report_to: tensorboard}; not those this section's options set."
    )

    def validate(self) -> None:
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.num_train_epochs > 0:
            raise ConfigError(f"num_train_epochs={self.num_train_epochs}: must be > 0 (nothing would be trained)")
        check_numbers(self, ("learning_rate", "warmup_steps"))
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps={self.max_steps}: must be >= 1, or -1 for num_train_epochs")
        self.training_args = check_training_args(type(self), self.training_args, "training_args")


@dataclass
class ModelOptions:
    """The LLM a stage fine-tunes (or the small one it builds from the data) and its optional LoRA adapters."""

    option_prefix = ""
    """What error messages put before an option's name (where the options are nested in another section)."""

    model: str = field(
        default=TINY,
        metadata={"help": "Base model: a local folder, a Hub id, or 'tiny' (a small one built from the data's text)."},
    )
    dtype: str = field(default="float32", metadata={"help": "Weights dtype.", "choices": tuple(DTYPES)})
    tiny_vocab_size: int = field(default=4096, metadata={"help": "model=tiny: BPE vocabulary before added tokens."})
    tiny_hidden_size: int = field(default=128, metadata={"help": "model=tiny: hidden size of the language model."})
    tiny_layers: int = field(default=2, metadata={"help": "model=tiny: language-model layers."})
    use_lora: bool = field(
        default=False,
        metadata={"help": "LoRA adapters on the language model plus trained rows of the added tokens; off: full FT."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGETS), metadata={"help": "Language-model modules that get LoRA adapters."}
    )

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"{self.option_prefix}dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        for name in ("tiny_vocab_size", "tiny_hidden_size", "tiny_layers", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.option_prefix}{name}={getattr(self, name)}: must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{self.option_prefix}lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if not self.lora_target_modules:
            raise ConfigError(f"{self.option_prefix}lora_target_modules is empty: name the modules to adapt")
