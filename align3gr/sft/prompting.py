"""The token IDs a model sees before and as its answer, shared by SFT training and decoding.

Training data is pre-tokenized with these two functions and decoding builds its inputs with `encode_prompt`, so
both see byte-identical prompt tokens (no re-tokenization across the prompt/answer boundary).

- With a chat template: the prompt is one user message rendered with `add_generation_prompt=True`, exactly as the
  template writes it (any BOS the template emits included, none added).
- Without one (base models such as Llama-2): the tokenizer's BOS token when it has one, then the text followed by
  `PLAIN_SEPARATOR` (a newline), tokenized without special tokens; the answer starts on the next line.

The answer is its tokens (no special tokens added) followed by the EOS id, which is what generation stops at.

`encode_listings` gives the same IDs for many listings at once, and `align3gr.sft.batch_encoding` those of
`encode_prompt` and `encode_completion` for many texts, for SFT's training rows.

A listing (the `stream` form of the sequential task) is a user's items in order as the answer: each item's code
tokens followed by `LISTING_SEPARATOR`, and no EOS, because the listing goes on. Every listed item is a target, and
the prompt for "what comes next" is the same tokens cut after the last history item, so one training row teaches
every position of a history at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from align3gr.errors import ConfigError, DataError

PLAIN_SEPARATOR = "\n"
LISTING_SEPARATOR = ", "


def encode_prompt(tokenizer, text: str) -> list[int]:
    """The prompt's token IDs: chat template (one user turn plus the assistant header) or BOS + text + newline."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": text}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        return list(ids)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + tokenizer.encode(text + PLAIN_SEPARATOR, add_special_tokens=False)


def encode_completion(tokenizer, completion: str) -> list[int]:
    """The answer's token IDs followed by the EOS id."""
    return tokenizer.encode(completion, add_special_tokens=False) + [eos_id(tokenizer)]


def eos_id(tokenizer) -> int:
    """The EOS id answers end with, or a ConfigError for a tokenizer without one."""
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token: answers could not end")
    return tokenizer.eos_token_id


def code_ids(tokenizer, codes: Sequence[str]) -> list[int]:
    """The vocabulary IDs of one SCID's code tokens, or a DataError naming a token the tokenizer lacks."""
    ids = tokenizer.convert_tokens_to_ids(list(codes))
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise DataError(f"code tokens {list(codes)} are not all in the tokenizer's vocabulary: wrong code tables?")
    return ids


def encode_listing(tokenizer, listing: Sequence[Sequence[str]]) -> tuple[list[int], list[int]]:
    """The IDs of items listed in order (each SCID's code tokens, then the separator) and a mask that is 1 on the
    code tokens: the targets of a `stream` row."""
    return encode_listings(tokenizer, [listing])[0]


def encode_listings(tokenizer, listings: Sequence[Sequence[Sequence[str]]]) -> list[tuple[list[int], list[int]]]:
    """`encode_listing` of each listing, each item's IDs looked up once (a catalogue has far fewer items than
    listed positions)."""
    separator = tokenizer.encode(LISTING_SEPARATOR, add_special_tokens=False)
    items: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}
    encoded = []
    for listing in listings:
        ids: list[int] = []
        mask: list[int] = []
        for codes in listing:
            key = tuple(codes)
            if key not in items:
                items[key] = (code_ids(tokenizer, key) + separator, [1] * len(key) + [0] * len(separator))
            item_ids, item_mask = items[key]
            ids += item_ids
            mask += item_mask
        encoded.append((ids, mask))
    return encoded
