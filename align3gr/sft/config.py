"""Options of the `sft` stage: the base model, the task mixture (Figure 3, Table 4), LoRA and the optimiser."""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.decode import BEAM_SIZE
from align3gr.errors import ConfigError
from align3gr.options import ModelOptions, TrainingOptions
from align3gr.scid import INIT_METHODS
from align3gr.sft.tasks import SEQ_FORMATS, TASKS, check_seq_format, check_tasks
from align3gr.training_args import TRAINING_FIXED, TRAINING_REFUSED, TRAINING_RENAMED, TrainerArgs

BEST_METRICS = ("ndcg@10", "recall@10", "ndcg@5", "recall@5")
PROBE_KS = tuple(sorted({int(metric.partition("@")[2]) for metric in BEST_METRICS}))
"""The cut-offs the valid ranking computes: those of every metric that may select the best checkpoint."""


def check_scheduler(name: str) -> None:
    """A ConfigError unless `name` is one of the installed transformers' schedules. Read when a config is checked,
    not when its options are listed: `transformers.trainer_utils` imports peft and bitsandbytes (seconds)."""
    from transformers import SchedulerType

    schedules = [schedule.value for schedule in SchedulerType]
    if name not in schedules:
        raise ConfigError(f"lr_scheduler_type={name!r}: expected one of {', '.join(schedules)}")


@dataclass
class SFTStageConfig(TrainingOptions, ModelOptions):
    """Vocabulary extension with the SCID tokens, then multi-task SFT with TRL's SFTTrainer (loss on answers): the
    base model of `ModelOptions` (the Hugging Face loading options below are SFT's own), trained with
    `TrainingOptions`."""

    section = "sft"
    trainer_args = TrainerArgs(
        "trl:SFTConfig",
        fixed={
            **TRAINING_FIXED,
            "completion_only_loss": "the loss is on the answers only (Figure 3)",
            "dataset_kwargs": "the stage tokenizes, labels and packs the rows itself (align3gr.sft.data)",
            "eval_strategy": "the task-A losses and the valid probe are evaluated every save_steps",
            "eval_on_start": "the task-A losses are reported before training (not again when a run resumes)",
            "packing_strategy": "best-fit decreasing when packing",
            "load_best_model_at_end": "the valid probe's best checkpoint is kept when valid_users > 0",
            "greater_is_better": "the valid probe's metrics grow",
        },
        refused=TRAINING_REFUSED,
        renamed={
            **TRAINING_RENAMED,
            "eval_steps": "save_steps",
            "per_device_eval_batch_size": "per_device_train_batch_size",
            "train_sampling_strategy": "group_by_length",
            "metric_for_best_model": "best_metric",
        },
    )

    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code shipped with the checkpoint."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: an NF4 base (bitsandbytes, CPU or CUDA)."})
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS), metadata={"help": "Task mixture (Figure 3).", "choices": TASKS}
    )
    with_user_scid: bool = field(default=True, metadata={"help": "Put the user's SCID in prompts (Table 4)."})
    seq_format: str = field(
        default="prompt",
        metadata={
            "help": "Form of task A: 'prompt' is Figure 3's (history in the prompt, one row per prefix); 'stream' "
            "lists the user's items as the answer, a loss on every item of a window.",
            "choices": tuple(SEQ_FORMATS),
        },
    )
    stream_stride: int | None = field(
        default=None, metadata={"help": "seq_format=stream: items between window ends; none: the history length."}
    )
    holdout_last: int = field(
        default=0,
        metadata={
            "help": "Each user's last N training interactions left out of the tasks' histories and targets and of "
            "task C2's intentions: the DPO stages' most recent prompts then ask for items the policy was not trained "
            "to predict. The profiles (B2) and preference statements (C3) the data stage wrote still summarise the "
            "whole training part, held-out items included."
        },
    )
    max_examples_per_task: int | None = field(
        default=None, metadata={"help": "Cap per task (a seeded sample); none: every example."}
    )
    task_limits: dict[str, int | None] = field(
        default_factory=dict,
        metadata={"help": "Caps that replace max_examples_per_task for the tasks named, e.g. {seq: null} (all)."},
    )
    token_init: str = field(default="mean", metadata={"help": "Initial rows of SCID tokens.", "choices": INIT_METHODS})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={"help": "Learning-rate schedule: a name of transformers' SchedulerType (linear, cosine, ...)."},
    )
    max_length: int = field(default=1024, metadata={"help": "Longest tokenized example (prompt + answer)."})
    packing: bool = field(default=False, metadata={"help": "Pack examples into max_length rows (BFD, padding-free)."})
    padding_free: bool = field(default=False, metadata={"help": "Concatenate each batch without padding."})
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch rows of similar length (less padding; batches then hold mostly one task, which made the "
            "default mixture learn worse): off draws batches at random."
        },
    )
    eval_examples: int = field(
        default=256, metadata={"help": "Training examples and valid users whose task-A loss is reported."}
    )
    valid_users: int = field(
        default=512,
        metadata={
            "help": "Valid users ranked by beam search at each evaluation (a seeded sample, history excluded): the "
            "best checkpoint by `best_metric` is kept and early stopping watches it; 0: off (the last step is kept)."
        },
    )
    valid_beam_size: int = field(default=BEAM_SIZE, metadata={"help": "Beam width of the valid ranking."})
    best_metric: str = field(default="ndcg@10", metadata={"help": "Checkpoint selection.", "choices": BEST_METRICS})
    early_stopping_patience: int | None = field(
        default=3, metadata={"help": "Stop after N evaluations without a better best_metric; none: never."}
    )

    def validate(self) -> None:
        ModelOptions.validate(self)
        TrainingOptions.validate(self)
        check_tasks(self.tasks)
        check_seq_format(self.seq_format)
        if self.stream_stride is not None and self.stream_stride < 1:
            raise ConfigError(f"stream_stride={self.stream_stride}: must be >= 1 (or null: the history length)")
        if self.token_init not in INIT_METHODS:
            raise ConfigError(f"token_init={self.token_init!r}: expected one of {', '.join(INIT_METHODS)}")
        if self.load_in_4bit and not self.use_lora:
            raise ConfigError("load_in_4bit=True (QLoRA) trains an adapter: set use_lora=True")
        if self.packing and self.padding_free:
            raise ConfigError("packing and padding_free: choose one (BFD packing is already padding-free)")
        if self.holdout_last < 0:
            raise ConfigError(f"holdout_last={self.holdout_last}: must be >= 0")
        for name in ("max_length", "eval_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        check_scheduler(self.lr_scheduler_type)
        if self.best_metric not in BEST_METRICS:
            raise ConfigError(f"best_metric={self.best_metric!r}: expected one of {', '.join(BEST_METRICS)}")
        if self.valid_users < 0:
            raise ConfigError(f"valid_users={self.valid_users}: must be >= 0")
        cutoff = max(PROBE_KS)
        if self.valid_beam_size < cutoff:
            raise ConfigError(
                f"valid_beam_size={self.valid_beam_size}: must be >= {cutoff}, the largest K of the valid ranking's "
                "Recall/NDCG@K (the beam width is the length of each ranked list)"
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience={self.early_stopping_patience}: must be >= 1 (or null)")
        limits = {"max_examples_per_task": self.max_examples_per_task, **self.task_limits}
        for name, limit in limits.items():
            if name != "max_examples_per_task" and name not in TASKS:
                raise ConfigError(f"task_limits: unknown task {name!r}; known tasks: {', '.join(TASKS)}")
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise ConfigError(f"{name} limit {limit!r}: must be an integer >= 1 (or null: all)")
