"""LoRA helpers of the stages that train adapters (UniSID in `tokenize`, `sft`): default targets, module names."""

from __future__ import annotations

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def module_name(model, module) -> str:
    """The attribute name (last path component) of `module` inside `model`."""
    return next(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is module)
