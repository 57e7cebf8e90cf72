"""The dedicated fixed-length beam search over the SCID trie: the hot loop of evaluation and self-play.

A SCID has exactly L tokens, so the search runs exactly L steps: one forward over the left-padded prompts fills
the KV cache, the cache is expanded to the beams, and each step scores only the trie children of each beam
(`log_softmax` over the whole vocabulary, then a gather), so a beam's score is the true log-probability of its
SCID prefix. Beams track their trie node as an integer; at the end nodes are leaves, and leaves are items.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from align3gr.decode.base import Decoder, Ranked, left_pad, ranked_from_leaves


class BeamSearchDecoder(Decoder):
    """Constrained beam search of width `beam_size`, L steps, one model call per step for the whole batch."""

    def decode_batch(self, prompts: Sequence[Sequence[int]]) -> list[Ranked]:
        ids, mask = left_pad(prompts, self.pad_token_id, self.device)
        batch = len(prompts)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        nodes = torch.zeros(batch, dtype=torch.long, device=self.device)
        scores = torch.zeros(batch, device=self.device)
        last_position = positions[:, -1]
        width = 1
        for depth in range(self.trie.depth):
            tokens, children, valid = self.trie.children(nodes, depth)
            fan_out = tokens.shape[1]
            candidates = log_probs.gather(1, tokens).masked_fill(~valid, float("-inf")) + scores[:, None]
            candidates = candidates.view(batch, width * fan_out)
            top, index = candidates.topk(min(self.beam_size, width * fan_out), dim=1)
            rows = (torch.arange(batch, device=self.device)[:, None] * width + index // fan_out).flatten()
            nodes = children.view(batch, -1).gather(1, index).flatten()
            scores = top.flatten()
            width = top.shape[1]
            if depth + 1 == self.trie.depth:
                break
            next_tokens = tokens.view(batch, -1).gather(1, index).flatten()
            cache.reorder_cache(rows)
            mask = torch.cat([mask[rows], mask.new_ones(len(rows), 1)], dim=1)
            last_position = last_position[rows] + 1
            output = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=mask,
                position_ids=last_position[:, None],
                cache=cache,
                use_cache=True,
            )
            log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        nodes, scores = nodes.view(batch, width), scores.view(batch, width)
        return [ranked_from_leaves(self.trie, nodes[b], scores[b]) for b in range(batch)]
