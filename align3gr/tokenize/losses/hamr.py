"""QuaSID's Hamming-guided Margin Repulsion with Conflict-Aware Valid Pair Masking (seed 001, Eq. 8-13).

In-batch pairs whose SIDs agree too much are pushed apart in the encoder space: full collisions (Hamming
distance 0) to a cosine distance of at least m_full, partial ones (0 < H <= R) to at least m_partial. CVPM
(Eq. 8) first removes pairs that are not conflicts: the same underlying item twice, and constructed
collaborative positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional


@dataclass
class HaMRConfig:
    """Hyperparameters with the paper's names and defaults (seed 001, 5.3 and A.2)."""

    radius: int = 1  # R, the Hamming radius of partial collisions
    m_full: float = 0.8
    m_partial: float = 0.5
    lambda_full: float = 0.2
    lambda_partial: float = 0.1
    eps: float = 1e-8


def cvpm_mask(ids: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: M = M^pos * M^item, True where pair (i, j) may be repelled. `ids` [N] are the underlying item
    IDs (same ID, including i = j, is excluded); `positives` [N, N] marks constructed collaborative positives."""
    mask = ids.unsqueeze(0) != ids.unsqueeze(1)
    if positives is not None:
        mask &= ~(positives | positives.T)
    return mask


def hamming(codes: torch.Tensor) -> torch.Tensor:
    """Eq. 9: [N, N] number of levels where two SIDs differ."""
    return (codes.unsqueeze(1) != codes.unsqueeze(0)).sum(-1)


def hamr_loss(
    embeddings: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, config: HaMRConfig | None = None
) -> torch.Tensor:
    """Eq. 10-13 on encoder embeddings z [N, d] (normalised here) with SIDs [N, L] and the CVPM mask."""
    config = config or HaMRConfig()
    e = functional.normalize(embeddings, dim=-1)
    distance = 1 - e @ e.T
    h = hamming(codes)
    full = (h == 0) & mask
    partial = (h > 0) & (h <= config.radius) & mask
    full_term = (config.m_full - distance).clamp_min(0)[full].sum() / (full.sum() + config.eps)
    partial_term = (config.m_partial - distance).clamp_min(0)[partial].sum() / (partial.sum() + config.eps)
    return config.lambda_full * full_term + config.lambda_partial * partial_term
