"""Reproducibility: same seed, same config, same numbers (codes, embeddings, metrics)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[torch.Generator]:
    """Seed torch and switch to deterministic kernels for the block (multi-threaded CPU backward passes
    otherwise differ in the last bits between runs); the caller's RNG state and setting are restored after. The
    generator is a CPU one whatever `device` the block computes on, so random draws do not depend on it; on an
    accelerator an operation without a deterministic kernel warns instead of failing, and cuBLAS gets the
    workspace setting its deterministic mode needs (unless the environment sets one)."""
    state = torch.random.get_rng_state()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    accelerated = device is not None and device.type != "cpu"
    if accelerated:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=accelerated)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.random.set_rng_state(state)
