"""The dedicated fixed-length beam search over the SCID trie: the hot loop of evaluation and self-play.

A SCID has exactly L tokens, so the search runs exactly L steps: one forward over the left-padded prompts fills
the KV cache, and each step scores only the trie children of each beam (`log_softmax` over the whole vocabulary,
then a gather), so a beam's score is the true log-probability of its SCID prefix. Beams track their trie node as
an integer; at the end nodes are leaves, and leaves are items. Excluded items (`recommend(..., exclude=...)`) are
exact: a child whose subtree holds only excluded leaves is never a candidate (`SCIDTrie.children`), so the search
returns the `beam_size` best of the other items (all of them when fewer remain).

Two layouts run the steps, with the same results:

- `tree` (default when the attention takes a custom 4D mask): the beams of a prompt stay in the prompt's row. Each
  step appends the beams' new tokens to that row's KV cache as parallel positions, and a 4D mask lets each beam see
  the prompt and its own ancestors only. The prompt's KV cache is never copied per beam and never reordered.
- `expand`: the KV cache is repeated to one row per beam and reordered after every step (any attention
  implementation, e.g. flash-attention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from align3gr.decode import BEAM_SIZE
from align3gr.decode.base import Decoder, Ranked, best_first, left_pad, ranked_from_leaves
from align3gr.decode.trie import SCIDTrie
from align3gr.errors import ConfigError
from align3gr.models.attention import MASKED_ATTENTION, model_attention_mask, sliding_attention, takes_custom_mask

LAYOUTS = ("auto", "tree", "expand")


class BeamSearchDecoder(Decoder):
    """Constrained beam search of width `beam_size`, L steps, one model call per step for the whole batch."""

    def __init__(
        self,
        model,
        trie: SCIDTrie,
        pad_token_id: int,
        beam_size: int = BEAM_SIZE,
        batch_size: int = 8,
        layout: str = "auto",
    ):
        super().__init__(model, trie, pad_token_id, beam_size, batch_size)
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        tree = takes_custom_mask(model) and not sliding_attention(model)  # a window would cut the beams' keys
        if layout == "tree" and not tree:
            raise ConfigError(
                f"layout='tree' needs attention that takes a custom mask {MASKED_ATTENTION} and no sliding window"
            )
        self.layout = layout if layout != "auto" else ("tree" if tree else "expand")

    def decode_batch(self, prompts: Sequence[Sequence[int]], banned: torch.Tensor | None = None) -> list[Ranked]:
        ids, mask = left_pad(prompts, self.pad_token_id, self.device)
        batch = len(prompts)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        layout = (_TreeSteps if self.layout == "tree" else _ExpandedSteps)(self.model, cache, mask, positions[:, -1])
        log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        nodes = torch.zeros(batch, dtype=torch.long, device=self.device)
        scores = torch.zeros(batch, device=self.device)
        width = 1
        for depth in range(self.trie.depth):
            rows = None if banned is None else banned.repeat_interleave(width, 0)
            tokens, children, valid = self.trie.children(nodes, depth, rows)
            fan_out = tokens.shape[1]
            candidates = log_probs.gather(1, tokens).masked_fill(~valid, float("-inf")) + scores[:, None]
            candidates = candidates.view(batch, width * fan_out)
            top, index = best_first(candidates, self.beam_size)
            nodes = children.view(batch, -1).gather(1, index).flatten()
            scores = top.flatten()
            width = top.shape[1]
            if depth + 1 == self.trie.depth:
                break
            log_probs = layout.step(tokens.view(batch, -1).gather(1, index), index // fan_out)
        nodes, scores = nodes.view(batch, width), scores.view(batch, width)
        return [ranked_from_leaves(self.trie, nodes[b], scores[b]) for b in range(batch)]


class _TreeSteps:
    """Beams as parallel positions of their prompt's row: the cache grows by the beam width per step."""

    def __init__(self, model, cache: DynamicCache, prompt_mask: torch.Tensor, last_position: torch.Tensor):
        self.model, self.cache = model, cache
        self.prompt_mask = prompt_mask.bool()
        self.next_position = last_position + 1
        self.ancestors = torch.zeros(len(prompt_mask), 1, 0, dtype=torch.bool, device=prompt_mask.device)

    def step(self, tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """Log-probabilities `[batch * width, vocab]` after each beam's new token (`tokens`, `parents`: `[batch,
        width]`, parents index the previous step's beams of the same row)."""
        batch, width = tokens.shape
        generated = self.ancestors.shape[2]
        inherited = self.ancestors.gather(1, parents[..., None].expand(batch, width, generated))
        own = torch.eye(width, dtype=torch.bool, device=tokens.device).expand(batch, width, width)
        self.ancestors = torch.cat([inherited, own], dim=2)
        prompt = self.prompt_mask[:, None, :].expand(batch, width, self.prompt_mask.shape[1])
        allowed = torch.cat([prompt, self.ancestors], dim=2)[:, None]
        output = self.model(
            input_ids=tokens,
            attention_mask=model_attention_mask(self.model, allowed),
            position_ids=self.next_position[:, None].expand(batch, width),
            cache=self.cache,
            use_cache=True,
        )
        self.next_position = self.next_position + 1
        return torch.log_softmax(output.logits.float(), dim=-1).view(batch * width, -1)


class _ExpandedSteps:
    """One row per beam: the cache is repeated and reordered to follow the beams at every step."""

    def __init__(self, model, cache: DynamicCache, mask: torch.Tensor, last_position: torch.Tensor):
        self.model, self.cache, self.mask, self.last_position = model, cache, mask, last_position
        self.width = 1

    def step(self, tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """As `_TreeSteps.step`."""
        batch, width = tokens.shape
        rows = (torch.arange(batch, device=tokens.device)[:, None] * self.width + parents).flatten()
        self.cache.reorder_cache(rows)
        self.mask = torch.cat([self.mask[rows], self.mask.new_ones(len(rows), 1)], dim=1)
        self.last_position = self.last_position[rows] + 1
        self.width = width
        output = self.model(
            input_ids=tokens.reshape(-1, 1),
            attention_mask=self.mask,
            position_ids=self.last_position[:, None],
            cache=self.cache,
            use_cache=True,
        )
        return torch.log_softmax(output.logits[:, -1].float(), dim=-1)
