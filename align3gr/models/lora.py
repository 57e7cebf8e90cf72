"""LoRA helpers of the stages that train adapters (UniSID in `tokenize`, `sft`): default targets, module names."""

from __future__ import annotations

import functools

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def module_name(model, module) -> str:
    """The attribute name (last path component) of `module` inside `model`."""
    return next(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is module)


def save_trained_rows_only(model) -> None:
    """Make every save of a PeftModel (checkpoints, the published adapter) hold the adapter and its trained token rows
    only: peft's default (`save_embedding_layers="auto"`) also stores the whole input and output embedding matrices
    when it sees the vocabulary grew (about 1 GB a checkpoint at Qwen2.5-0.5B in float32), rows `load_adapter`
    rebuilds from the base anyway. Any other model is left as it is."""
    if hasattr(model, "peft_config"):
        model.save_pretrained = functools.partial(type(model).save_pretrained, model, save_embedding_layers=False)
