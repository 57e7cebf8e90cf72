"""TRL `SFTConfig` of a stage config: loss on answers only, and the CPU settings multi-process runs need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align3gr.sft.config import SFTStageConfig
from align3gr.sft.trainer import PROBE_PREFIX
from align3gr.training import trainer_arguments, with_training_args


def sft_argument_values(config: SFTStageConfig, output_dir: Path, eval_steps: int) -> dict[str, Any]:
    """The `SFTConfig` arguments the stage sets from `config` (`config.training_args` not included).

    The hardware-dependent settings are `align3gr.training.trainer_arguments`'. Padding-free batching takes the
    examples as they are (they were filtered to `max_length` when tokenized); packing uses best-fit decreasing.
    `group_by_length` batches rows of similar length (Transformers' length-grouped sampler, seeded).
    With a valid ranking probe, the checkpoint with the best `best_metric` is the one kept at the end, and the work
    folder keeps two checkpoints (the best and the last): with one, Transformers deletes the last when training ends,
    and a run killed before it publishes would resume from the best and train its steps again. The evaluation
    on start is a fresh run's: the stage turns it off when it resumes one. TRL does not prepare the datasets: the
    stage gives them labelled and packed (`align3gr.sft.data.trainer_rows`).
    """
    selection = {}
    if config.valid_users:
        selection = {
            "load_best_model_at_end": True,
            "metric_for_best_model": PROBE_PREFIX + config.best_metric,
            "greater_is_better": True,
            "save_total_limit": 2,
        }
    return {
        **trainer_arguments(config, output_dir),
        **selection,
        "weight_decay": config.weight_decay,
        "lr_scheduler_type": config.lr_scheduler_type,
        "per_device_eval_batch_size": config.per_device_train_batch_size,
        "max_length": None if config.padding_free else config.max_length,
        "packing": config.packing,
        "packing_strategy": "bfd",
        "train_sampling_strategy": "group_by_length" if config.group_by_length else "random",
        "padding_free": config.padding_free,
        "completion_only_loss": True,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "eval_on_start": True,
    }


def sft_arguments(config: SFTStageConfig, output_dir: Path, eval_steps: int):
    """Training arguments for `SFTTrainer` on pre-tokenized rows (`completion_mask` -> loss on answers): the stage's
    (`sft_argument_values`) and the config's `training_args`."""
    from trl import SFTConfig

    return SFTConfig(**with_training_args(sft_argument_values(config, output_dir, eval_steps), config))
