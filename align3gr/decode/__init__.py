"""Constrained decoding of item SCIDs: the compiled SCID trie and three decoders with one interface.

- `BeamSearchDecoder`: the dedicated fixed-length beam search (fast; the default);
- `GenerateDecoder`: `model.generate` with `SCIDLogitsProcessor` (or unconstrained, to measure the valid rate);
- `ExhaustiveDecoder`: exact log-probabilities of every item (the top-K beam search approximates).

The decoders load on first use (`__getattr__`): the options that name them (`BEAM_SIZE`, `DECODERS`) are read by every
command line's parser, which then does not import torch and transformers.
"""

from __future__ import annotations

from align3gr.lazy import lazy_attributes

BEAM_SIZE = 20
"""Align3GR's beam width ("Evaluation Metrics"): the length of each ranked list, the default of every ranking (the
decoders, evaluation, SFT's valid ranking)."""
DECODERS = ("beam_search", "generate", "exhaustive", "unconstrained")
GENERATE_DECODERS = ("generate", "unconstrained")
"""The decoders that run Transformers' beam search, which reports the ranked sequences' scores from 2 beams on
(one beam is its greedy search, which reports none)."""


def check_decoder_width(decoder: str, beam_size: int) -> None:
    """A ConfigError when `decoder` cannot rank at `beam_size`: beam widths start at 1, `generate`'s at 2."""
    from align3gr.errors import ConfigError

    if beam_size < 1:
        raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
    if decoder in GENERATE_DECODERS and beam_size < 2:
        raise ConfigError(
            f"decoder {decoder!r} needs beam_size >= 2 (with one beam Transformers runs greedy search, which reports "
            "no sequence scores to rank by); use decoder 'beam_search' for a width of 1"
        )


_EXPORTS = {
    "Decoder": "align3gr.decode.base",
    "Ranked": "align3gr.decode.base",
    "BeamSearchDecoder": "align3gr.decode.beam_search",
    "ExhaustiveDecoder": "align3gr.decode.exhaustive",
    "GenerateDecoder": "align3gr.decode.processor",
    "SCIDLogitsProcessor": "align3gr.decode.processor",
    "ranking_generation_config": "align3gr.decode.processor",
    "SCIDTrie": "align3gr.decode.trie",
    "build_decoder": "align3gr.decode.build",
}
__all__ = ["BEAM_SIZE", "DECODERS", "GENERATE_DECODERS", "check_decoder_width", *sorted(_EXPORTS)]

__getattr__ = lazy_attributes(__name__, _EXPORTS)
