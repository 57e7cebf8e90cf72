"""What every decoder returns and how it is driven: prompts in (token IDs), ranked item IDs with scores out.

`recommend(prompts, exclude=...)` takes per prompt the items never to return (a user's history); each decoder
documents how it honours them (the trie-constrained decoders exactly: they rank only the other items)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from align3gr.decode import BEAM_SIZE
from align3gr.decode.trie import SCIDTrie
from align3gr.errors import ConfigError

PADDING_SCORE = -1e8
"""Beams scoring at most this are padding (fewer candidates than beams), not sequences: a real SCID's
log-probability is far above it, while HF's beam search starts its extra beams at -1e9."""


@dataclass
class Ranked:
    """One prompt's recommendations: distinct real items, best first, with the log-probability of each SCID.

    `returned` counts the sequences the decoder produced before invalid ones (not an item) were dropped and
    `valid` those that were items; constrained decoders always have `valid == returned`."""

    items: list[str]
    scores: list[float]
    returned: int
    valid: int


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """`(input_ids, attention_mask)` of the prompts, left-padded so every prompt ends at the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {row} of the batch is empty")
        ids[row, width - len(prompt) :] = torch.as_tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def best_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` highest `scores` along the last dimension and their indices, ties in index order: unlike `topk`,
    whose order of equal values changes with k, a list is then the same prefix whatever the beam width."""
    order = scores.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    return scores.gather(-1, order), order


def ranked_from_leaves(
    trie: SCIDTrie, leaves: torch.Tensor, scores: torch.Tensor, banned: torch.Tensor | None = None
) -> Ranked:
    """Best-first sequences (their trie nodes after L tokens, DEAD if not an item) to a Ranked list: padding
    beams (score -inf, or HF's -1e9 filler) are not sequences; invalid, repeated and `banned` (leaf indices) items
    are dropped, the banned ones after being counted as returned and valid."""
    excluded = set() if banned is None else set(banned.tolist())
    items: list[str] = []
    listed: set[str] = set()
    kept: list[float] = []
    returned = valid = 0
    for leaf, item, score in zip(leaves.tolist(), trie.items_of(leaves), scores.tolist(), strict=True):
        if score <= PADDING_SCORE:
            continue
        returned += 1
        if item is None:
            continue
        valid += 1
        if leaf not in excluded and item not in listed:
            listed.add(item)
            items.append(item)
            kept.append(score)
    return Ranked(items, kept, returned, valid)


class Decoder(ABC):
    """Ranks the items of `trie` for prompts; subclasses implement one batch. `beam_size` results at most."""

    def __init__(self, model, trie: SCIDTrie, pad_token_id: int, beam_size: int = BEAM_SIZE, batch_size: int = 8):
        if beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.device = model.device
        self.trie = trie.to(self.device)
        self.pad_token_id = pad_token_id
        self.beam_size = beam_size
        self.batch_size = batch_size

    def recommend(
        self,
        prompts: Sequence[Sequence[int]],
        progress: Callable[[int], object] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[Ranked]:
        """Ranked items of every prompt, in order, without the items of `exclude[i]` for prompt i (item IDs, e.g.
        the user's history; None: nothing excluded); `progress(n)` is called after each batch of n prompts."""
        if exclude is not None and len(exclude) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(exclude)} exclusion lists")
        results: list[Ranked] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            banned = None if exclude is None else self.trie.banned_leaves(exclude[start : start + self.batch_size])
            with torch.inference_mode():
                results.extend(self.decode_batch(batch, banned))
            if progress is not None:
                progress(len(batch))
        return results

    @abstractmethod
    def decode_batch(self, prompts: Sequence[Sequence[int]], banned: torch.Tensor | None = None) -> list[Ranked]:
        """Ranked items of one batch of prompts; `banned` (`[prompts, M]`, `SCIDTrie.banned_leaves`) are the leaves
        each prompt must not return."""
