"""Models outside DeepSpeed ZeRO-3's training engine in a process that trains under it.

Once a ZeRO-3 config is registered (TRL's training arguments register it), `from_pretrained` spreads every weight of
a model over the processes as it loads (`deepspeed.zero.Init`), and only a DeepSpeed engine gathers them around its
forwards. A DPO stage generates its candidates with the policy before the trainer wraps it (`whole_weights`), and
loads the trained model again to evaluate it (`loading_whole`: a model for inference is never partitioned).
PEFT gathers the trainable SCID rows of a LoRA model (`trainable_token_indices`) on a CUDA device under ZeRO-3, so
an adapter trains under ZeRO-3 only with CUDA (`check_adapter_partitioning`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from align3gr.errors import ConfigError


@contextmanager
def whole_weights(model) -> Iterator[None]:
    """Inside the block, `model`'s weights are whole on every process (a collective: every process enters it);
    outside ZeRO-3, nothing happens."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        yield


@contextmanager
def loading_whole() -> Iterator[None]:
    """Inside the block, models load whole, as without ZeRO-3: the registered config is set aside, then restored."""
    from transformers.integrations import deepspeed

    registered = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = registered


def check_adapter_partitioning(adapter: bool, what: str) -> None:
    """A ConfigError before any work when `what` trains an adapter under ZeRO-3 without CUDA: PEFT 0.21 collects the
    rows of `trainable_token_indices` on a CUDA device under ZeRO-3 (and fails deep in loading without one)."""
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    if adapter and is_deepspeed_zero3_enabled() and not torch.cuda.is_available():
        raise ConfigError(
            f"{what} trains a LoRA adapter under DeepSpeed ZeRO-3, which needs CUDA: PEFT gathers the trainable SCID "
            "token rows (trainable_token_indices) on a CUDA device under ZeRO-3; on CPU use "
            "accelerate_configs/deepspeed_zero2.yaml, or train the full model (use_lora: false)"
        )
