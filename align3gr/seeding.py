"""Reproducibility: same seed, same config, same numbers (codes, embeddings, metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
    """Seed torch and switch to deterministic kernels for the block (multi-threaded CPU backward passes
    otherwise differ in the last bits between runs); the caller's RNG state and setting are restored after."""
    state = torch.random.get_rng_state()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.random.set_rng_state(state)
