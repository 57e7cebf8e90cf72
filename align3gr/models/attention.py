"""Custom 4D attention masks: which attention implementations take one, and in which form each wants it.

Shared-prompt layouts (the packed DPO forward, the tree beam search) put several continuations of one prompt in one
row, so each query needs its own set of visible keys, which only a full `[batch, 1, queries, keys]` mask can say.
"""

from __future__ import annotations

import torch

MASKED_ATTENTION = ("sdpa", "eager")
"""Attention implementations that accept a custom 4D mask (flash-attention kernels take padding masks only)."""


def model_config(model: torch.nn.Module):
    """The model's config, read through a DDP or DeepSpeed wrapper (`.module`), which has none of its own."""
    return getattr(getattr(model, "module", model), "config", None)


def attention_implementation(model: torch.nn.Module) -> str:
    """The attention implementation the model was loaded with (`sdpa` when the config does not say)."""
    return getattr(model_config(model), "_attn_implementation", None) or "sdpa"


def takes_custom_mask(model: torch.nn.Module) -> bool:
    """Whether the model's attention accepts a custom 4D mask."""
    return attention_implementation(model) in MASKED_ATTENTION


def sliding_attention(model: torch.nn.Module) -> bool:
    """Whether a layer of the model attends through a sliding window, whose cache keeps only the window's keys
    (Mistral v0.1, Gemma 2/3, Qwen2 with `use_sliding_window`)."""
    config = model_config(model)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return "sliding_attention" in types
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True) is not False


def model_attention_mask(model: torch.nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """A boolean `[batch, 1, queries, keys]` mask (True: may attend) in the model's form: boolean for sdpa, additive
    (0 or the dtype's minimum) for eager."""
    if attention_implementation(model) != "eager":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
