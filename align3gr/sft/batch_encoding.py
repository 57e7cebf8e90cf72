"""SFT rows at the cost of their distinct pieces: `encode_prompt` and `encode_completion` of many texts, token for
token, for the mixture's rows.

A mixture is made of few distinct pieces: the chat template around every prompt, the task templates' words, the
separators between SCID tokens, titles. A fast tokenizer cuts a text at its added tokens (the SCID tokens, the chat
template's special tokens) and encodes each piece between them on its own, and its pre-tokenizer cuts a piece into
words that are encoded on their own. `BatchEncoder` cuts a text at its added tokens and after the comma of every
', ' (where a GPT-2-style pre-tokenizer starts a word: each title of a listed history becomes a piece), and encodes
each distinct piece once. That holds for tokenizers that `piece_wise` accepts: added tokens of the form `<...>`
that strip nothing, no normalizer or NFC (character-wise), a pre-tokenizer made of word-splitting parts that starts
a word at each such cut. A chat template that puts the message between a fixed prefix and suffix is rendered once.
Any other tokenizer or template takes the reference path: one template rendering and one tokenizer call per batch.

Every `VERIFY_EVERY`-th text is also encoded the reference way; a difference turns the shortcut off for the rest of
the run, with a warning, and the batch is encoded again the reference way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from itertools import chain

from align3gr.sft.prompting import PLAIN_SEPARATOR, eos_id

log = logging.getLogger(__name__)
ADDED_TOKEN = re.compile(r"<[^<>]+>")
"""The form every added token must have for the shortcut."""
CUTS = re.compile(r"(<[^<>]+>)|(?<=,)(?= )")
"""Where a text is cut: around each `<...>` span (kept, an added token when it is in the vocabulary; a cut between
two list elements, after ', ', yields None), and between the comma and the space of ', ', where a GPT-2-style
pre-tokenizer always starts a new word: so each title of a listed history is a piece of its own."""
PIECE_WISE_PRE_TOKENIZERS = {"ByteLevel", "Split", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits"}
VERIFY_EVERY = 64
MAX_PIECES = 1 << 20
"""Distinct pieces kept; the cache starts over past this (a catalogue's titles and queries are unbounded)."""
SENTINEL = "\ue000"
CUT_PROBE = 'a, b), "c (1995)", 12, é,  d, \n, e!, "f"'
"""Cuts of `CUTS` in several contexts: the pre-tokenizer must start a word at each."""


def piece_wise(tokenizer) -> bool:
    """Whether `tokenizer` encodes the pieces between its added tokens each on its own, whatever their neighbours,
    so that a text's IDs are its pieces' IDs in order (see the module docstring)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    for token in tokenizer.added_tokens_decoder.values():
        if not ADDED_TOKEN.fullmatch(token.content) or token.lstrip or token.rstrip or token.single_word:
            return False
    state = json.loads(backend.to_str())
    normalizer, pre_tokenizer = state.get("normalizer"), state.get("pre_tokenizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        return False
    parts = (pre_tokenizer or {}).get("pretokenizers", [pre_tokenizer] if pre_tokenizer else [])
    if not parts or any(part.get("type") not in PIECE_WISE_PRE_TOKENIZERS for part in parts):
        return False
    words = backend.pre_tokenizer.pre_tokenize_str(CUT_PROBE)
    return {start for _, (start, _) in words} >= {m.end() for m in CUTS.finditer(CUT_PROBE) if m.group(1) is None}


def chat_frame(tokenizer) -> tuple[str, str] | None:
    """(prefix, suffix) the chat template renders around a one-message prompt, when two probes show it copies the
    message verbatim between them; None without a chat template or when it does not."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    probes = (SENTINEL, f" {SENTINEL} a\n")
    conversations = [[{"role": "user", "content": probe}] for probe in probes]
    rendered = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    if rendered[0].count(SENTINEL) != 1:
        return None
    prefix, suffix = rendered[0].split(SENTINEL)
    return (prefix, suffix) if rendered[1] == prefix + probes[1] + suffix else None


class BatchEncoder:
    """`encode_prompt` and `encode_completion` of many texts (see the module docstring)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.frame = chat_frame(tokenizer)
        self.shortcut = piece_wise(tokenizer) and (self.frame is not None or not self.chat)
        self.added = {token.content: index for index, token in tokenizer.added_tokens_decoder.items()}
        self.bos = [] if self.chat or tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        self.ids = self._known()
        self.cuts = set(self.added) | {None}
        self.seen = 0

    def prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode_prompt` of each text."""
        if not self.shortcut:
            return self._reference_prompts(texts)
        prefix, suffix = self.frame or ("", PLAIN_SEPARATOR)
        encoded = self._encode([prefix + text + suffix for text in texts])
        if self.bos:
            encoded = [self.bos + ids for ids in encoded]
        return encoded if self._agrees(texts, encoded, self._reference_prompts) else self._reference_prompts(texts)

    def completions(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode_completion` of each text: its IDs, then the EOS id."""
        if not self.shortcut:
            return self.completions_reference(texts)
        eos = eos_id(self.tokenizer)
        encoded = [ids + [eos] for ids in self._encode(texts)]
        reference = self.completions_reference
        return encoded if self._agrees(texts, encoded, reference) else reference(texts)

    def completions_reference(self, texts: Sequence[str]) -> list[list[int]]:
        """One tokenizer call for the batch, then the EOS id."""
        eos = eos_id(self.tokenizer)
        return [ids + [eos] for ids in self._tokenized(texts)]

    def _reference_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """One chat-template rendering and one tokenizer call for the batch (`apply_chat_template` tokenizes its
        rendering without special tokens, as this does)."""
        if not texts:
            return []
        if self.chat:
            conversations = [[{"role": "user", "content": text}] for text in texts]
            rendered = self.tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
            return self._tokenized(rendered)
        return [self.bos + ids for ids in self._tokenized([text + PLAIN_SEPARATOR for text in texts])]

    def _tokenized(self, texts: Sequence[str]) -> list[list[int]]:
        """The token IDs of each text without special tokens, from one batched tokenizer call."""
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text cut at its added tokens, the pieces between them encoded once each (new ones in one call)."""
        split = [self._split(text) for text in texts]
        new: set[str | None] = set()
        for parts in split:
            new.update(parts)
        new.difference_update(self.ids)
        if len(self.ids) + len(new) > MAX_PIECES + len(self.added):
            self.ids = self._known()
            new = {part for parts in split for part in parts} - self.ids.keys()
        ordered = sorted(new)
        for piece, encoding in zip(ordered, self.tokenizer.backend_tokenizer.encode_batch(ordered, False), strict=True):
            self.ids[piece] = encoding.ids
        lookup = self.ids.__getitem__
        return [list(chain.from_iterable(map(lookup, parts))) for parts in split]

    def _known(self) -> dict[str | None, list[int]]:
        """IDs of the added tokens, of the empty piece and of a cut (None); `_encode` adds each new piece's."""
        return {token: [index] for token, index in self.added.items()} | {"": [], None: []}

    def _split(self, text: str) -> list[str | None]:
        """`text` as its pieces, added tokens and cuts (`CUTS`), in order: `<...>` spans that are not added tokens
        stay in the piece around them, as the tokenizer leaves them."""
        parts = CUTS.split(text)
        if set(parts[1::2]) <= self.cuts:
            return parts
        merged = [parts[0]]
        for index in range(1, len(parts), 2):
            if parts[index] in self.cuts:
                merged += [parts[index], parts[index + 1]]
            else:
                merged[-1] += parts[index] + parts[index + 1]
        return merged

    def _agrees(self, texts: Sequence[str], encoded: list[list[int]], reference) -> bool:
        """Whether the IDs of every `VERIFY_EVERY`-th text equal the reference path's (one batched call); turns
        the shortcut off when not."""
        first = -self.seen % VERIFY_EVERY
        self.seen += len(texts)
        sample = list(range(first, len(texts), VERIFY_EVERY))
        expected = reference([texts[index] for index in sample])
        for index, ids in zip(sample, expected, strict=True):
            if encoded[index] != ids:
                log.warning(
                    "encoding by pieces differs from the tokenizer on %r (%s vs %s): tokenizing whole texts from here",
                    texts[index][:80], encoded[index][:12], ids[:12],
                )  # fmt: skip
                self.shortcut = False
                return False
        return True
