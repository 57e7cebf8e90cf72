"""TRL `SFTConfig` of a stage config: loss on answers only, and the CPU settings multi-process runs need."""

from __future__ import annotations

from pathlib import Path

from align3gr.sft.config import SFTStageConfig
from align3gr.training import trainer_arguments


def sft_arguments(config: SFTStageConfig, output_dir: Path, eval_steps: int):
    """Training arguments for `SFTTrainer` on pre-tokenized rows (`completion_mask` -> loss on answers).

    The hardware-dependent settings are `align3gr.training.trainer_arguments`'. Padding-free batching takes the
    examples as they are (they were filtered to `max_length` when tokenized); packing uses best-fit decreasing.
    """
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(config, output_dir),
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        max_length=None if config.padding_free else config.max_length,
        packing=config.packing,
        packing_strategy="bfd",
        padding_free=config.padding_free,
        completion_only_loss=True,
        eval_strategy="steps",
        eval_steps=eval_steps,
        eval_on_start=True,
    )
