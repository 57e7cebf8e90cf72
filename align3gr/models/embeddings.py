"""Growing a causal LM's embeddings to a larger vocabulary, the same way wherever it happens.

The SCID vocabulary extension grows them before training; loading an adapter grows its base model again, so the
rows the adapter does not store come out as they were in training.
"""

from __future__ import annotations

import torch

from align3gr.errors import ConfigError


def check_resizable(model) -> torch.nn.Embedding:
    """The input embedding of `model`, or a ConfigError when it is no `nn.Embedding` that can grow."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    if not isinstance(embeddings, torch.nn.Embedding):
        raise ConfigError(
            f"model {type(model).__name__} has no resizable input embedding (got {type(embeddings).__name__}); "
            "SCID tokens need a causal LM whose get_input_embeddings() is an nn.Embedding"
        )
    return embeddings


def resize_embeddings(model, size: int, known: int, pad_to_multiple_of: int = 64) -> list[torch.Tensor]:
    """Grow the embeddings to hold `size` tokens (padded to a multiple), every row from `known` on set to the
    mean of the first `known` rows (input and untied output matrices separately; an output bias to its mean).

    Deterministic, so loading a LoRA adapter trained on the extended model repeats it on the base model and gets
    the same rows outside the adapter's trained tokens. Returns the input matrix and, when untied, the output one.
    """
    embeddings = check_resizable(model)
    rows = max(size, embeddings.weight.shape[0])
    model.resize_token_embeddings(rows, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            weight[known:] = weight[:known].mean(0)
        if output is not None and getattr(output, "bias", None) is not None:
            output.bias[known:] = output.bias[:known].mean()
    return matrices
