"""The TRL arguments of a DPO stage and the policy it trains: the previous stage's model, or its adapter."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.trainer import SoftmaxDPOConfig
from align3gr.models.loading import ADAPTER_CONFIG, load_model_and_tokenizer, load_tokenizer


def dpo_arguments(config: DPOStageConfig, output_dir: Path) -> SoftmaxDPOConfig:
    """`SoftmaxDPOConfig` of a stage; without CUDA, several processes use gloo and float32 (bf16 off)."""
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    return SoftmaxDPOConfig(
        output_dir=str(output_dir),
        beta=config.beta,
        shared_prompt_forward=config.shared_prompt_forward,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=bf16,
        ddp_backend="gloo" if distributed and not cuda else None,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
    )


def load_policy(previous: Path, previous_meta: dict):
    """(model, tokenizer) to train from `previous`: a full model as saved, or, for an adapter folder, its base
    grown to the extended vocabulary with the adapter loaded trainable (TRL keeps a frozen copy as the reference)."""
    if not (previous / ADAPTER_CONFIG).is_file():
        return load_model_and_tokenizer(previous)
    from peft import PeftModel

    from align3gr.sft.vocab import resize_embeddings

    vocabulary = previous_meta["vocabulary"]
    base, _ = load_model_and_tokenizer(previous_meta["base_model"])
    resize_embeddings(base, vocabulary["embedding_rows"], vocabulary["base_vocab_size"], 1)
    return PeftModel.from_pretrained(base, str(previous), is_trainable=True), load_tokenizer(previous)
