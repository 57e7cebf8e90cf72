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
__all__ = ["BEAM_SIZE", "DECODERS", *sorted(_EXPORTS)]

__getattr__ = lazy_attributes(__name__, _EXPORTS)
