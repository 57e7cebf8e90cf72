"""SFT rows at the cost of their distinct pieces: `encode_prompt` and `encode_completion` of many texts, token for
token, for the mixture's rows.

A mixture is made of few distinct pieces: the chat template around every prompt, the task templates' words, the
separators between SCID tokens, titles. A fast tokenizer cuts a text at its added tokens (the SCID tokens, the chat
template's special tokens) and encodes each piece between them on its own, and its pre-tokenizer cuts a piece into
words that are encoded on their own. `BatchEncoder` cuts a text at its added tokens, and a long piece after the
comma of every ', ' (where a GPT-2-style pre-tokenizer starts a word: each title of a listed history becomes an
element of its own), and encodes each distinct piece once. That holds for tokenizers that `piece_wise` accepts:
added tokens of the form `<...>` that strip nothing, no normalizer or NFC (character-wise), a pre-tokenizer made of
word-splitting parts that starts a word after each such comma. A chat template that puts the message between a
fixed prefix and suffix is rendered once. Any other tokenizer or template takes the reference path: one template
rendering and one tokenizer call per batch.

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
ADDED_TOKEN = re.compile(r"(<[^<>]+>)")
"""The form every added token must have for the shortcut; a text is cut around each such span (kept: an added
token when it is in the vocabulary)."""
LIST_SEPARATOR = ", "
"""Long pieces are also cut between the comma and the space of each ', ', where a GPT-2-style pre-tokenizer always
starts a new word: each title of a listed history is then a piece of its own."""
LONG = 48
"""Pieces longer than this (characters) are cut at their list separators."""
PIECE_WISE_PRE_TOKENIZERS = {"ByteLevel", "Split", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits"}
VERIFY_EVERY = 128
MAX_PIECES = 1 << 20
"""Distinct pieces kept; the cache starts over past this (a catalogue's titles and queries are unbounded)."""
SENTINEL = "\ue000"
CUT_PROBE = 'a, b), "c (1995)", 12, é,  d, \n, e!, "f"'
"""List separators in several contexts: the pre-tokenizer must start a word after each comma."""


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
    cuts = {m.start() + 1 for m in re.finditer(LIST_SEPARATOR, CUT_PROBE)}
    return {start for _, (start, _) in words} >= cuts


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
        self.tokens = frozenset(self.added)
        self.ids = PieceIds(self.added)
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
            return self._reference_completions(texts)
        eos = eos_id(self.tokenizer)
        encoded = [ids + [eos] for ids in self._encode(texts)]
        reference = self._reference_completions
        return encoded if self._agrees(texts, encoded, reference) else reference(texts)

    def _reference_completions(self, texts: Sequence[str]) -> list[list[int]]:
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
        new: set[str] = set()
        for parts in split:
            new.update(parts)
        new.difference_update(self.ids)
        if len(self.ids) + len(new) > MAX_PIECES:
            self.ids = PieceIds(self.added)
            new = {part for parts in split for part in parts} - self.ids.keys()
        self.ids.learn(new, self.tokenizer.backend_tokenizer)
        lookup = self.ids.__getitem__
        return [list(chain.from_iterable(map(lookup, parts))) for parts in split]

    def _split(self, text: str) -> list[str]:
        """`text` as its pieces and added tokens, in order: `<...>` spans that are not added tokens stay in the
        piece around them, as the tokenizer leaves them."""
        parts = ADDED_TOKEN.split(text)
        if self.tokens.issuperset(parts[1::2]):
            return parts
        merged = [parts[0]]
        for index in range(1, len(parts), 2):
            if parts[index] in self.added:
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


class PieceIds(dict):
    """Token IDs of the added tokens and of each piece met so far. A long piece holding list separators (a listed
    history's titles) is not kept: its IDs are joined from those of its list elements, which are (`cut`)."""

    def __init__(self, added: dict[str, int]) -> None:
        super().__init__({token: [index] for token, index in added.items()} | {"": []})

    def learn(self, pieces: set[str], backend) -> None:
        """Encode what `pieces` need that is not known yet, in one call of the fast tokenizer."""
        needed = {element for piece in pieces for element in cut(piece)} - self.keys()
        ordered = sorted(needed)
        for piece, encoding in zip(ordered, backend.encode_batch(ordered, False), strict=True):
            self[piece] = encoding.ids

    def __missing__(self, piece: str) -> list[int]:
        return list(chain.from_iterable(self[element] for element in cut(piece)))


def cut(piece: str) -> list[str]:
    """A long piece cut after the comma of each list separator (the elements encode alone, see `LIST_SEPARATOR`);
    any other piece as it is."""
    if len(piece) <= LONG or LIST_SEPARATOR not in piece:
        return [piece]
    first, *rest = piece.split(LIST_SEPARATOR)
    return [first + ",", *(" " + element + "," for element in rest[:-1]), " " + rest[-1]]
