"""The TRL arguments of a DPO stage and the policy it trains: the previous stage's model, or its adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.trainer import SoftmaxDPOConfig
from align3gr.models.loading import ADAPTER_CONFIG, load_adapter, load_model_and_tokenizer, load_tokenizer
from align3gr.training import trainer_arguments, with_training_args


def dpo_argument_values(config: DPOStageConfig, output_dir: Path) -> dict[str, Any]:
    """The `SoftmaxDPOConfig` arguments a stage sets from `config` (hardware-dependent settings from
    `align3gr.training.trainer_arguments`; `config.training_args` not included)."""
    return {
        **trainer_arguments(config, output_dir),
        "beta": config.beta,
        "shared_prompt_forward": config.shared_prompt_forward,
        "sft_weight": config.sft_weight,
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
    }


def dpo_arguments(config: DPOStageConfig, output_dir: Path) -> SoftmaxDPOConfig:
    """`SoftmaxDPOConfig` of a stage: its own arguments (`dpo_argument_values`) and the config's `training_args`."""
    return SoftmaxDPOConfig(**with_training_args(dpo_argument_values(config, output_dir), config))


def load_policy(previous: Path):
    """(model, tokenizer) to train from `previous`: a full model as saved, or its adapter loaded trainable on its
    base (TRL keeps a frozen copy of that adapter as the reference)."""
    if (previous / ADAPTER_CONFIG).is_file():
        return load_adapter(previous, trainable=True), load_tokenizer(previous)
    return load_model_and_tokenizer(previous)
