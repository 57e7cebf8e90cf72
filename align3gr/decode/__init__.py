"""Constrained decoding of item SCIDs: the compiled SCID trie and three decoders with one interface.

- `BeamSearchDecoder`: the dedicated fixed-length beam search (fast; the default);
- `GenerateDecoder`: `model.generate` with `SCIDLogitsProcessor` (or unconstrained, to measure the valid rate);
- `ExhaustiveDecoder`: exact log-probabilities of every item (the top-K beam search approximates).
"""

from __future__ import annotations

from align3gr.decode.base import BEAM_SIZE, Decoder, Ranked
from align3gr.decode.beam_search import BeamSearchDecoder
from align3gr.decode.exhaustive import ExhaustiveDecoder
from align3gr.decode.processor import GenerateDecoder, SCIDLogitsProcessor, ranking_generation_config
from align3gr.decode.trie import SCIDTrie
from align3gr.errors import ConfigError
from align3gr.models.loading import pad_token_id

DECODERS = ("beam_search", "generate", "exhaustive", "unconstrained")


def build_decoder(name: str, model, tokenizer, trie: SCIDTrie, beam_size: int, batch_size: int) -> Decoder:
    """The decoder called `name` (one of DECODERS) for `model`, with the tokenizer's pad and EOS tokens."""
    common = {"pad_token_id": pad_token_id(tokenizer), "beam_size": beam_size, "batch_size": batch_size}
    if name == "beam_search":
        return BeamSearchDecoder(model, trie, **common)
    if name == "exhaustive":
        return ExhaustiveDecoder(model, trie, **common)
    if name in ("generate", "unconstrained"):
        return GenerateDecoder(
            model, trie, eos_token_id=tokenizer.eos_token_id, constrained=name == "generate", **common
        )
    raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}; got {name!r}")


__all__ = [
    "BEAM_SIZE",
    "DECODERS",
    "BeamSearchDecoder",
    "Decoder",
    "ExhaustiveDecoder",
    "GenerateDecoder",
    "Ranked",
    "SCIDLogitsProcessor",
    "SCIDTrie",
    "build_decoder",
    "ranking_generation_config",
]
