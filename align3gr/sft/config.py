"""Options of the `sft` stage: the base model, the task mixture (Figure 3, Table 4), LoRA and the optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.errors import ConfigError
from align3gr.models.loading import DTYPES
from align3gr.sft.base_model import TINY
from align3gr.sft.tasks import TASKS, check_tasks
from align3gr.sft.vocab import INIT_METHODS

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTStageConfig:
    """Vocabulary extension with the SCID tokens, then multi-task SFT with TRL's SFTTrainer (loss on answers)."""

    section = "sft"

    model: str = field(
        default=TINY,
        metadata={"help": "Base causal LM: a local folder, a Hub id, or 'tiny' (a small Qwen2 built from the data)."},
    )
    dtype: str = field(default="float32", metadata={"help": f"Weights dtype: {', '.join(DTYPES)}."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code shipped with the checkpoint."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: NF4 base weights (bitsandbytes, CUDA)."})
    tiny_vocab_size: int = field(default=4096, metadata={"help": "model=tiny: BPE vocabulary before SCID tokens."})
    tiny_hidden_size: int = field(default=128, metadata={"help": "model=tiny: hidden size."})
    tiny_layers: int = field(default=2, metadata={"help": "model=tiny: transformer layers."})
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": f"Task mixture (Figure 3): {', '.join(TASKS)}."}
    )
    with_user_scid: bool = field(default=True, metadata={"help": "Put the user's SCID in prompts (Table 4)."})
    max_examples_per_task: int | None = field(
        default=None, metadata={"help": "Cap per task (a seeded sample); none: every example."}
    )
    token_init: str = field(
        default="mean", metadata={"help": f"Initial rows of SCID tokens: {', '.join(INIT_METHODS)}."}
    )
    use_lora: bool = field(default=False, metadata={"help": "LoRA adapter plus trained SCID rows; off: full FT."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_TARGETS), metadata={"help": "Modules that get LoRA adapters."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (paper: 1e-3/5e-4/1e-4)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warm-up steps, or a fraction of all steps if < 1."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per update."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the mixture (if max_steps < 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimiser updates; -1: num_train_epochs."})
    max_length: int = field(default=1024, metadata={"help": "Longest tokenized example (prompt + answer)."})
    packing: bool = field(default=False, metadata={"help": "Pack examples into max_length rows (BFD, padding-free)."})
    padding_free: bool = field(default=False, metadata={"help": "Concatenate each batch without padding."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    bf16: bool | None = field(default=None, metadata={"help": "bfloat16 mixed precision; default: on CUDA only."})
    eval_examples: int = field(
        default=256, metadata={"help": "Training examples and valid users whose task-A loss is reported."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N updates."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N updates (a killed run resumes)."})
    seed: int = field(default=0, metadata={"help": "Seed of paraphrases, sampling, initialisation and shuffling."})

    def validate(self) -> None:
        check_tasks(self.tasks)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.token_init not in INIT_METHODS:
            raise ConfigError(f"token_init={self.token_init!r}: expected one of {', '.join(INIT_METHODS)}")
        if self.load_in_4bit and not self.use_lora:
            raise ConfigError("load_in_4bit=True (QLoRA) trains an adapter: set use_lora=True")
        if self.packing and self.padding_free:
            raise ConfigError("packing and padding_free: choose one (BFD packing is already padding-free)")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "eval_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.max_examples_per_task is not None and self.max_examples_per_task < 1:
            raise ConfigError(f"max_examples_per_task={self.max_examples_per_task}: must be >= 1 (or null: all)")
