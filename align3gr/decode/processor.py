"""Hugging Face `generate` over the SCID trie: a `LogitsProcessor`, and settings that cannot corrupt the ranking.

In transformers' beam search the processors receive log-probabilities (`log_softmax` first), so masking them
keeps every beam score the true log-probability of its SCID prefix. The processor finds each beam's trie node
from its generated suffix (`input_ids` after the prompt), a few tensor operations for all beams at once.
With excluded items (`recommend(..., exclude=...)`) it also masks every token leading into a subtree of excluded
items only, so constrained `generate` ranks exactly the other items, as the dedicated beam search does;
unconstrained generation has no trie to steer by, so excluded items are dropped from its returned sequences
(fewer than `beam_size` items may remain).

`generate` fills every option left unset from the model's `generation_config.json` (sampling, top-k,
repetition penalty, ...). `ranking_generation` therefore sets each ranking-relevant option explicitly and
swaps in a neutral model default for the call, so the file cannot change the ranking.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from align3gr.decode import check_decoder_width
from align3gr.decode.base import Decoder, Ranked, left_pad, ranked_from_leaves
from align3gr.decode.trie import SCIDTrie


class SCIDLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a beam's SCID prefix along the trie to -inf; with `banned`
    (`[prompts, M]`, `SCIDTrie.banned_leaves`), also those leading only to the prompt's banned leaves."""

    def __init__(self, trie: SCIDTrie, prompt_length: int, banned: torch.Tensor | None = None):
        self.trie = trie
        self.prompt_length = prompt_length
        self.banned = banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        suffix = input_ids[:, self.prompt_length :]
        nodes = self.trie.walk(suffix)
        rows = None
        if self.banned is not None:  # generate's rows are the prompts' beams, prompt by prompt
            rows = self.banned.repeat_interleave(len(input_ids) // len(self.banned), 0)
        allowed = self.trie.allowed_mask(nodes, suffix.shape[1], rows)
        return scores.masked_fill(~allowed, float("-inf"))


def ranking_generation_config(
    num_beams: int, length: int, eos_token_id: int | None, pad_token_id: int, **overrides: object
) -> GenerationConfig:
    """Deterministic beam search of exactly `length` new tokens whose scores are sums of log-probabilities:
    no sampling, no temperature/top-p, no repetition or length penalty, EOS impossible before `length`.
    top-k is left at the library default: transformers applies it only when sampling, which is off."""
    options: dict[str, object] = {
        "do_sample": False,
        "num_beams": num_beams,
        "num_return_sequences": num_beams,
        "max_new_tokens": length,
        "min_new_tokens": length,
        "length_penalty": 0.0,
        "early_stopping": "never",
        "temperature": 1.0,
        "top_p": 1.0,
        "typical_p": 1.0,
        "repetition_penalty": 1.0,
        "encoder_repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "use_cache": True,
        "return_dict_in_generate": True,
        "output_scores": True,
    }
    options.update(overrides)
    return GenerationConfig(**options)


@contextlib.contextmanager
def neutral_generation_defaults(model) -> Iterator[None]:
    """Within the block, the model's default generation config is the library default (the one loaded from
    `generation_config.json` is restored after), so options left unset in a call are never taken from it."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id)
    try:
        yield
    finally:
        model.generation_config = saved


class GenerateDecoder(Decoder):
    """`model.generate(num_beams=beam_size)` with `SCIDLogitsProcessor`; `constrained=False` drops the
    processor (SCIDs generated freely: outputs may not be items, which the valid rate then shows)."""

    def __init__(self, *args, eos_token_id: int | None = None, constrained: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        check_decoder_width("generate" if constrained else "unconstrained", self.beam_size)
        self.eos_token_id = eos_token_id
        self.constrained = constrained

    def constraint(self, prompt_length: int, banned: torch.Tensor | None) -> dict:
        """Keyword arguments of `generate` that keep beams on the trie, off `banned` leaves (none when
        unconstrained)."""
        if not self.constrained:
            return {}
        return {"logits_processor": LogitsProcessorList([SCIDLogitsProcessor(self.trie, prompt_length, banned)])}

    def decode_batch(self, prompts: Sequence[Sequence[int]], banned: torch.Tensor | None = None) -> list[Ranked]:
        ids, mask = left_pad(prompts, self.pad_token_id, self.device)
        depth = self.trie.depth
        config = ranking_generation_config(self.beam_size, depth, self.eos_token_id, self.pad_token_id)
        with neutral_generation_defaults(self.model):
            output = self.model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, **self.constraint(ids.shape[1], banned)
            )
        suffix = output.sequences[:, ids.shape[1] :]
        complete = suffix.shape[1] == depth
        leaves = self.trie.walk(suffix) if complete else torch.full((len(suffix),), -1, device=self.device)
        leaves = leaves.view(len(prompts), self.beam_size)
        scores = output.sequences_scores.view(len(prompts), self.beam_size)
        return [
            ranked_from_leaves(self.trie, leaves[b], scores[b], None if banned is None else banned[b])
            for b in range(len(prompts))
        ]
