"""TRL `SFTConfig` of a stage config: loss on answers only, and the CPU settings multi-process runs need."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from align3gr.sft.config import SFTStageConfig


def sft_arguments(config: SFTStageConfig, output_dir: Path, eval_steps: int):
    """Training arguments for `SFTTrainer` on pre-tokenized rows (`completion_mask` -> loss on answers).

    Without CUDA, several processes talk over gloo and train in float32 (bf16 off), which is what `accelerate launch`
    with several CPU processes (DDP or DeepSpeed) needs. Padding-free batching takes the examples as they are
    (they were filtered to `max_length` when tokenized); packing uses best-fit decreasing.
    """
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        max_length=None if config.padding_free else config.max_length,
        packing=config.packing,
        packing_strategy="bfd",
        padding_free=config.padding_free,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=bf16,
        ddp_backend="gloo" if distributed and not cuda else None,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=eval_steps,
        eval_on_start=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
    )
