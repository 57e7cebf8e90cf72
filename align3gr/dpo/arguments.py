"""The TRL arguments of a DPO stage and the policy it trains: the previous stage's model, or its adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from accelerate import PartialState

from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.trainer import SoftmaxDPOConfig
from align3gr.io import read_json
from align3gr.models.attention import MASKED_ATTENTION
from align3gr.models.loading import ADAPTER_CONFIG, load_adapter, load_model_and_tokenizer, load_tokenizer
from align3gr.stage_output import META_FILE
from align3gr.training import trainer_arguments, with_training_args

log = logging.getLogger(__name__)


def dpo_argument_values(config: DPOStageConfig, output_dir: Path) -> dict[str, Any]:
    """The `SoftmaxDPOConfig` arguments a stage sets from `config` (hardware-dependent settings from
    `align3gr.training.trainer_arguments`; `config.training_args` not included)."""
    return {
        **trainer_arguments(config, output_dir),
        "beta": config.beta,
        "trust_remote_code": config.trust_remote_code,
        "shared_prompt_forward": config.shared_prompt_forward,
        "sft_weight": config.sft_weight,
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
    }


def dpo_arguments(config: DPOStageConfig, output_dir: Path) -> SoftmaxDPOConfig:
    """`SoftmaxDPOConfig` of a stage: its own arguments (`dpo_argument_values`) and the config's `training_args`."""
    return SoftmaxDPOConfig(**with_training_args(dpo_argument_values(config, output_dir), config))


def load_policy(previous: Path, forward: str = "packed", trust_remote_code: bool = False):
    """(model, tokenizer) to train from `previous`: a full model as saved, or its adapter loaded trainable on its
    base (TRL keeps a frozen copy of that adapter as the reference), in the `dtype` and attention SFT loaded its base
    with (the config `meta.json` records; sdpa for the `packed` shared-prompt `forward` when that attention takes no
    custom mask, as flash-attention), and on this process's GPU where training keeps a whole copy there anyway (one
    process, DDP, ZeRO-1/2): the stage's rows are decoded with it before the trainer places it."""
    trained = read_json(previous / META_FILE).get("config", {})
    dtype, attention = trained.get("dtype", "float32"), trained.get("attn_implementation")
    if forward == "packed" and attention not in (None, *MASKED_ATTENTION):
        log.info("DPO loads the policy with sdpa attention (SFT: %s), which the packed forward's mask needs", attention)
        attention = "sdpa"
    if (previous / ADAPTER_CONFIG).is_file():
        policy = load_adapter(previous, dtype, True, attention, trust_remote_code)
        tokenizer = load_tokenizer(previous, trust_remote_code)
    else:
        policy, tokenizer = load_model_and_tokenizer(
            previous, dtype=dtype, attn_implementation=attention, trust_remote_code=trust_remote_code
        )
    if whole_copy_per_process() and not getattr(policy, "is_quantized", False):  # bitsandbytes placed it already
        policy.to(PartialState().device)
    return policy, tokenizer


def whole_copy_per_process() -> bool:
    """Whether each process trains a whole copy of the model (not FSDP, not ZeRO-3, which shard it)."""
    from accelerate.utils import DistributedType
    from transformers.integrations import is_deepspeed_zero3_enabled

    return PartialState().distributed_type != DistributedType.FSDP and not is_deepspeed_zero3_enabled()
