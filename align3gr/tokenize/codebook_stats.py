"""Code-usage statistics of a code table: per level perplexity, utilisation and top-1 load (seed 002), and the
SID entropy of seed 001 (entropy of the empirical distribution of full codes)."""

from __future__ import annotations

import numpy as np


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def level_statistics(codes: np.ndarray, codebook_sizes: list[int]) -> list[dict]:
    """Per level: perplexity exp(H), utilisation (share of codes used), top-1 load (share of the most used)."""
    out = []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        out.append(
            {
                "level": level,
                "codebook_size": size,
                "perplexity": float(np.exp(_entropy(counts))),
                "utilisation": float((counts > 0).mean()),
                "top1_load": float(counts.max() / max(1, counts.sum())),
            }
        )
    return out


def sid_entropy(codes: np.ndarray) -> float:
    """E_SID = -sum_s p(s) log p(s) over full codes s (seed 001, 5.1.3); higher means fewer shared codes."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return _entropy(counts)
