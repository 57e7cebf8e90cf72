"""Exhaustive scoring: the exact log-probability of every item of the catalogue, the top-K beam search approximates.

The prompt is encoded once; the trie is then walked depth first in chunks of sibling prefixes: each distinct
SCID prefix is run through the model exactly once, one token on top of its parent's KV cache, so the work is
one token per trie node (not L per item) and memory is bounded by `chunk_size` rows per depth. A chunk's cache
is its parents' rows of the parent cache (a fresh `DynamicCache` of the model's layer types).
Excluded items are exact: their scores are set to -inf before the top `beam_size` is taken.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from align3gr.decode.base import Decoder, Ranked, best_first, ranked_from_leaves


class ExhaustiveDecoder(Decoder):
    """Scores all items for each prompt (one prompt at a time) and returns the exact top `beam_size`."""

    def __init__(self, *args, chunk_size: int = 256, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk_size = chunk_size

    def decode_batch(self, prompts: Sequence[Sequence[int]], banned: torch.Tensor | None = None) -> list[Ranked]:
        results = []
        for row, prompt in enumerate(prompts):
            scores = self.item_log_probs(prompt)
            if banned is not None:
                scores[banned[row][banned[row] < len(scores)]] = float("-inf")
            top, leaves = best_first(scores, self.beam_size)
            results.append(ranked_from_leaves(self.trie, leaves, top))
        return results

    @torch.inference_mode()
    def item_log_probs(self, prompt: Sequence[int]) -> torch.Tensor:
        """`[items]` log-probability of each leaf's SCID given the prompt (leaf order of the trie)."""
        ids = torch.as_tensor([list(prompt)], device=self.device)
        cache = DynamicCache(config=self.model.config)
        output = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        leaves = torch.empty(len(self.trie), device=self.device)
        root_score = torch.zeros(1, device=self.device)
        self._expand(cache, log_probs, root_score, 0, 1, 0, len(prompt), leaves)
        return leaves

    def _expand(
        self,
        cache: DynamicCache,
        log_probs: torch.Tensor,
        prefix_scores: torch.Tensor,
        first: int,
        end: int,
        depth: int,
        position: int,
        leaves: torch.Tensor,
    ) -> None:
        """Score the children of depth-`depth` nodes `first..end-1` (whose cache rows and next-token
        log-probabilities are given), then recurse into them chunk by chunk, or write leaf scores."""
        level, config = self.trie.levels[depth], self.model.config
        child_first, child_end = int(level.offsets[first]), int(level.offsets[end])
        counts = level.offsets[first + 1 : end + 1] - level.offsets[first:end]
        parent = torch.repeat_interleave(torch.arange(end - first, device=self.device), counts)
        tokens = level.child_tokens[child_first:child_end]
        scores = prefix_scores[parent] + log_probs[parent, tokens]
        if depth + 1 == self.trie.depth:
            leaves[child_first:child_end] = scores
            return
        for start in range(0, child_end - child_first, self.chunk_size):
            chunk = slice(start, min(start + self.chunk_size, child_end - child_first))
            rows = DynamicCache([(lay.keys[parent[chunk]], lay.values[parent[chunk]]) for lay in cache.layers], config)
            positions = torch.full((len(parent[chunk]), 1), position, device=self.device)
            output = self.model(input_ids=tokens[chunk, None], position_ids=positions, cache=rows, use_cache=True)
            next_log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
            self._expand(
                rows,
                next_log_probs,
                scores[chunk],
                child_first + chunk.start,
                child_first + chunk.stop,
                depth + 1,
                position + 1,
                leaves,
            )
