"""SFT rows at the cost of their distinct pieces: `encode_prompt` and `encode_completion` of many texts, token for
token, for the mixture's rows.

A mixture is made of few distinct pieces: the chat template around every prompt, the task templates' words, the
separators between SCID tokens, titles. A fast tokenizer cuts a text at its added tokens (the SCID tokens, the chat
template's special tokens) and encodes each piece between them on its own, and its pre-tokenizer cuts a piece into
words that are encoded on their own. `BatchEncoder` cuts a text around its runs of added tokens (an item's whole
SCID is one piece), and a long piece after the comma of every ', ' (where a GPT-2-style pre-tokenizer starts a word:
each title of a listed history becomes an element of its own), encodes each distinct piece once, and gathers the
texts' IDs from the pieces' with numpy (`align3gr.sft.ragged`). That holds for tokenizers that `piece_wise` accepts:
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

import numpy as np

from align3gr.sft.prompting import PLAIN_SEPARATOR, eos_id
from align3gr.sft.ragged import Growing, Ragged, spans

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
    """`encode_prompt` and `encode_completion` of many texts, as `Ragged` rows (see the module docstring)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.frame = chat_frame(tokenizer)
        self.shortcut = piece_wise(tokenizer) and (self.frame is not None or not self.chat)
        self.added = {token.content: index for index, token in tokenizer.added_tokens_decoder.items()}
        self.bos = None if self.chat else tokenizer.bos_token_id
        self.tokens = frozenset(self.added)
        characters = sorted({c for token in self.added for c in token[1:-1]})
        token = f"<[{re.escape(''.join(characters))}]+>"
        self.run_pattern = re.compile(f"({token}(?:{token})*)") if characters else ADDED_TOKEN
        self.pieces = PieceTable(self.added)
        self.seen = 0

    def prompts(self, texts: Sequence[str]) -> Ragged:
        """`encode_prompt` of each text."""
        if not self.shortcut:
            return self._reference_prompts(texts)
        prefix, suffix = self.frame or ("", PLAIN_SEPARATOR)
        encoded = self._encode([prefix + text + suffix for text in texts])
        if self.bos is not None:
            encoded = encoded.with_each(self.bos, at_start=True)
        return encoded if self._agrees(texts, encoded, self._reference_prompts) else self._reference_prompts(texts)

    def completions(self, texts: Sequence[str]) -> Ragged:
        """`encode_completion` of each text: its IDs, then the EOS id."""
        if not self.shortcut:
            return self._reference_completions(texts)
        encoded = self._encode(texts).with_each(eos_id(self.tokenizer), at_start=False)
        reference = self._reference_completions
        return encoded if self._agrees(texts, encoded, reference) else reference(texts)

    def _reference_completions(self, texts: Sequence[str]) -> Ragged:
        """One tokenizer call for the batch, then the EOS id."""
        return self._tokenized(texts).with_each(eos_id(self.tokenizer), at_start=False)

    def _reference_prompts(self, texts: Sequence[str]) -> Ragged:
        """One chat-template rendering and one tokenizer call for the batch (`apply_chat_template` tokenizes its
        rendering without special tokens, as this does)."""
        if self.chat and texts:
            conversations = [[{"role": "user", "content": text}] for text in texts]
            rendered = self.tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
            return self._tokenized(rendered)
        encoded = self._tokenized([text + PLAIN_SEPARATOR for text in texts])
        return encoded if self.bos is None else encoded.with_each(self.bos, at_start=True)

    def _tokenized(self, texts: Sequence[str]) -> Ragged:
        """The token IDs of each text without special tokens, from one batched tokenizer call."""
        if not texts:
            return Ragged.from_lists([])
        ids = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return Ragged.from_lists(ids)

    def _encode(self, texts: Sequence[str]) -> Ragged:
        """Each text cut into its pieces (`_split`), each distinct piece encoded once (new ones in one call), and
        the pieces' IDs gathered."""
        if len(self.pieces) > MAX_PIECES:
            self.pieces = PieceTable(self.added)
        split = [self._split(text) for text in texts]
        return self.pieces.rows(split, self.tokenizer.backend_tokenizer)

    def _split(self, text: str) -> list[str]:
        """`text` as its pieces, in order: runs of added tokens (a whole SCID), the text between them, and a long
        piece's list elements (`cut`). `<...>` spans that are not added tokens stay in the piece around them, as
        the tokenizer leaves them."""
        parts = self.run_pattern.split(text)
        runs = parts[1::2]
        if not self.pieces.runs.issuperset(runs):
            if not all(self.tokens.issuperset(ADDED_TOKEN.split(run)[1::2]) for run in runs):
                parts = self._merged(text)
            self.pieces.runs.update(parts[1::2])
        pieces = parts[::2]
        if self.pieces.whole.issuperset(pieces):
            return parts
        if any(len(piece) > LONG and LIST_SEPARATOR in piece for piece in pieces):
            parts = [element for part in parts for element in cut(part)]  # a run holds no list separator
        self.pieces.whole.update(piece for piece in pieces if len(piece) <= LONG or LIST_SEPARATOR not in piece)
        return parts

    def _merged(self, text: str) -> list[str]:
        """`text` cut at each added token, the `<...>` spans that are not added tokens kept in the piece around
        them (every other element an added token)."""
        parts = ADDED_TOKEN.split(text)
        merged = [parts[0]]
        for index in range(1, len(parts), 2):
            if parts[index] in self.added:
                merged += [parts[index], parts[index + 1]]
            else:
                merged[-1] += parts[index] + parts[index + 1]
        return merged

    def _agrees(self, texts: Sequence[str], encoded: Ragged, reference) -> bool:
        """Whether the IDs of every `VERIFY_EVERY`-th text equal the reference path's (one batched call); turns
        the shortcut off when not."""
        first = -self.seen % VERIFY_EVERY
        self.seen += len(texts)
        sample = np.arange(first, len(texts), VERIFY_EVERY)
        expected = reference([texts[index] for index in sample]).tolist()
        for index, got, ids in zip(sample, encoded.take(sample).tolist(), expected, strict=True):
            if got != ids:
                log.warning(
                    "encoding by pieces differs from the tokenizer on %r (%s vs %s): tokenizing whole texts from here",
                    texts[index][:80], got[:12], ids[:12],
                )  # fmt: skip
                self.shortcut = False
                return False
        return True


class PieceTable:
    """Token IDs of the added tokens, of runs of them and of each piece met so far, back to back in one growing
    array (`values`, with each row's `starts` and `lengths`); `index` maps a piece to its row. A long piece holding
    list separators (a listed history's titles) is never a piece: `_split` cuts it into its list elements (`cut`).
    `runs` holds the runs of added tokens met so far and `whole` the pieces met that are not cut, so that `_split`
    checks each distinct piece once."""

    def __init__(self, added: dict[str, int]) -> None:
        self.added, self.index, self.runs, self.whole = added, {}, set(added), {""}
        self.values, self.starts, self.lengths = Growing(), Growing(), Growing()
        self.add(["", *added], [[], *([index] for index in added.values())])

    def __len__(self) -> int:
        return len(self.index) + len(self.runs) + len(self.whole)

    def add(self, pieces: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
        """New pieces and their IDs."""
        self.index.update((piece, row) for row, piece in enumerate(pieces, len(self.index)))
        new = Ragged.from_lists(ids)
        self.starts.extend(new.starts() + self.values.size)
        self.lengths.extend(new.lengths)
        self.values.extend(new.values)

    def rows(self, split: Sequence[Sequence[str]], backend) -> Ragged:
        """The IDs of each text cut into `split`'s pieces, learning the pieces not met yet (`learn`)."""
        if not split:
            return Ragged.from_lists([])
        counts = np.fromiter(map(len, split), np.int64, count=len(split))
        try:
            rows = self._rows_of(split, int(counts.sum()))
        except KeyError:
            self.learn({piece for pieces in split for piece in pieces} - self.index.keys(), backend)
            rows = self._rows_of(split, int(counts.sum()))
        lengths = self.lengths.view()[rows]
        values = self.values.view()[spans(self.starts.view()[rows], lengths)]
        return Ragged(values, np.add.reduceat(lengths, np.cumsum(counts) - counts))  # every text has a piece

    def _rows_of(self, split: Sequence[Sequence[str]], total: int) -> np.ndarray:
        """The row of every piece of `split`, in order (a KeyError for a piece not met yet)."""
        return np.fromiter(map(self.index.__getitem__, chain.from_iterable(split)), np.int64, total)

    def learn(self, pieces: set[str], backend) -> None:
        """Add `pieces`: runs of added tokens joined from their tokens' IDs, the others from one call of the fast
        tokenizer."""
        runs = sorted(pieces & self.runs)
        texts = sorted(pieces - self.runs)
        self.add(runs, [[self.added[token] for token in ADDED_TOKEN.split(run)[1::2]] for run in runs])
        self.add(texts, [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)])


def cut(piece: str) -> list[str]:
    """A long piece cut after the comma of each list separator (the elements encode alone, see `LIST_SEPARATOR`);
    any other piece as it is."""
    if len(piece) <= LONG or LIST_SEPARATOR not in piece:
        return [piece]
    first, *rest = piece.split(LIST_SEPARATOR)
    return [first + ",", *(" " + element + "," for element in rest[:-1]), " " + rest[-1]]
