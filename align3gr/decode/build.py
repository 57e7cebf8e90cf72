"""`build_decoder`: one of the decoders of `align3gr.decode` by its name, as the configs give it."""

from __future__ import annotations

from align3gr.decode import DECODERS
from align3gr.decode.base import Decoder
from align3gr.decode.beam_search import BeamSearchDecoder
from align3gr.decode.exhaustive import ExhaustiveDecoder
from align3gr.decode.processor import GenerateDecoder
from align3gr.decode.trie import SCIDTrie
from align3gr.errors import ConfigError
from align3gr.models.loading import pad_token_id


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
