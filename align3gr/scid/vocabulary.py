"""Vocabulary extension: one added token per SCID code, embeddings resized and the new rows initialised.

The tokens are ordinary added tokens (not special), so `decode` keeps them and constrained decoding can read
them back. The embedding matrix is padded to a multiple of 64 rows; the new input rows (and the new output rows
of an untied head) start from the mean of the existing rows, or from the mean embedding of the texts of the items
and users each code belongs to (`init="text"`), so the model's predictions are not disturbed at the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from align3gr.errors import ConfigError
from align3gr.models.embeddings import check_resizable, resize_embeddings
from align3gr.scid import INIT_METHODS


def token_texts(codes: Mapping[str, Sequence[str]], texts: Mapping[str, str], limit: int = 32) -> dict[str, list[str]]:
    """For `init="text"`: the texts (titles, profiles) of up to `limit` of the items or users carrying each token."""
    out: dict[str, list[str]] = {}
    for key, tokens in codes.items():
        for token in tokens:
            bucket = out.setdefault(token, [])
            if len(bucket) < limit and texts.get(key):
                bucket.append(texts[key])
    return out


def _text_rows(tokenizer, weight: torch.Tensor, tokens: Sequence[str], texts: Mapping[str, Sequence[str]]):
    """Per token, the mean over its texts of the mean row of each text's tokens (None when it has no text)."""
    rows = []
    for token in tokens:
        vectors = [weight[tokenizer.encode(t, add_special_tokens=False)].mean(0) for t in texts.get(token, []) if t]
        rows.append(torch.stack(vectors).mean(0) if vectors else None)
    return rows


def extend_vocabulary(
    model,
    tokenizer,
    tokens: Sequence[str],
    init: str = "mean",
    texts: Mapping[str, Sequence[str]] | None = None,
    pad_to_multiple_of: int = 64,
) -> list[int]:
    """Add `tokens` to `tokenizer`, resize `model`'s embeddings and initialise the new rows; returns their IDs.

    `init="mean"`: each new row (padding rows too) is the mean of the rows of the tokenizer's existing tokens
    (input and untied output matrices separately). `init="text"`: the mean embedding of the texts in `texts[token]` (see
    `token_texts`), falling back to the mean for tokens without text. Raises ConfigError before changing anything
    when a token is already in the vocabulary or the model cannot be resized.
    """
    if init not in INIT_METHODS:
        raise ConfigError(f"init={init!r}: expected one of {', '.join(INIT_METHODS)}")
    vocabulary = tokenizer.get_vocab()
    taken = [t for t in tokens if t in vocabulary]
    if taken:
        raise ConfigError(
            f"{len(taken)} SCID tokens are already in the tokenizer's vocabulary (first: {taken[0]!r}); "
            "code tokens must be new: rename the code prefixes or use a tokenizer without them"
        )
    if len(set(tokens)) != len(tokens):
        raise ConfigError("SCID token list has duplicates; build it with scid_tokens()")
    check_resizable(model)
    known = len(tokenizer)
    tokenizer.add_tokens(list(tokens), special_tokens=False)
    new_ids = tokenizer.convert_tokens_to_ids(list(tokens))
    matrices = resize_embeddings(model, len(tokenizer), known, pad_to_multiple_of)
    if init == "text":
        with torch.no_grad():
            for weight in matrices:
                for token_id, row in zip(new_ids, _text_rows(tokenizer, weight, tokens, texts or {}), strict=True):
                    if row is not None:
                        weight[token_id] = row
    return new_ids
