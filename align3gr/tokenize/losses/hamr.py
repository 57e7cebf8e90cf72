"""QuaSID's Hamming-guided Margin Repulsion (HaMR) with Conflict-Aware Valid Pair Masking (CVPM), QuaSID Eq. 8-13.

In-batch pairs whose SIDs agree too much are pushed apart in the encoder space, on the normalised embeddings
e_i = z_i / ||z_i||, with the Hamming distance H_ij (Eq. 9) and the cosine distance D_ij = 1 - e_i.e_j (Eq. 10):

    Omega_full    = {(i, j): H_ij = 0 and M_ij = 1}
    Omega_partial = {(i, j): 0 < H_ij <= R and M_ij = 1}
    L_HaMR = lambda_full / (|Omega_full| + eps) * sum_{Omega_full} max(0, m_full - D_ij)                (Eq. 11, 13)
           + lambda_partial / (|Omega_partial| + eps) * sum_{Omega_partial} max(0, m_partial - D_ij)    (Eq. 12, 13)

CVPM (Eq. 8), M = M^pos * M^item, keeps only pairs that may be conflicts: it drops pairs of the same underlying
item (including i = j) and the constructed collaborative positives. Pairs are ordered, as in the paper's 2B x 2B
matrices, so each unordered pair counts twice in both the sums and the set sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from align3gr.errors import ConfigError, check_numbers


@dataclass
class HaMRConfig:
    """Hyperparameters with the paper's names; defaults from QuaSID A.2 (R = 1 offline, m_full = 0.8,
    m_partial = 0.5) and 5.6 (best lambda_full = 0.2, lambda_partial = 0.1)."""

    radius: int = 1  # R, the Hamming radius of partial collisions
    m_full: float = 0.8
    m_partial: float = 0.5
    lambda_full: float = 0.2
    lambda_partial: float = 0.1
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_numbers(self, ("m_full", "m_partial", "lambda_full", "lambda_partial"), prefix="HaMR ")
        check_numbers(self, ("eps",), positive=True, prefix="HaMR ")  # |Omega| + eps divides: 0/0 without pairs
        if self.m_full < self.m_partial:
            raise ConfigError(f"HaMR needs m_full >= m_partial (QuaSID Eq. 12); got {self.m_full} < {self.m_partial}")
        if self.radius < 1:
            raise ConfigError(f"HaMR radius R={self.radius}: must be >= 1")


def paired_positives(batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """The constructed positives of QuaSID's layout: a batch of B (trigger, target) pairs concatenated as
    [triggers; targets], 2B rows, where row i <= B is paired with row i + B. Returns [2B, 2B] (True: positive)."""
    index = torch.arange(batch_size, device=device)
    positives = torch.zeros(2 * batch_size, 2 * batch_size, dtype=torch.bool, device=device)
    positives[index, index + batch_size] = True
    positives[index + batch_size, index] = True
    return positives


def cvpm_mask(ids: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: M = M^pos * M^item, [N, N], True where pair (i, j) may be repelled. `ids` [N] are the underlying
    item IDs (M^item: same ID, including i = j, is excluded); `positives` [N, N] marks constructed collaborative
    positives (M^pos, symmetrised), e.g. `paired_positives(B)`."""
    mask = ids.unsqueeze(0) != ids.unsqueeze(1)
    if positives is not None:
        mask &= ~(positives | positives.T)
    return mask


def hamming(codes: torch.Tensor) -> torch.Tensor:
    """Eq. 9: [N, N] number of levels where two SIDs [N, L] differ."""
    return (codes.unsqueeze(1) != codes.unsqueeze(0)).sum(-1)


def cosine_distance(embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. 10: [N, N] 1 - cos(z_i, z_j)."""
    e = functional.normalize(embeddings, dim=-1)
    return 1 - e @ e.T


def hamr_loss(
    embeddings: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, config: HaMRConfig | None = None
) -> torch.Tensor:
    """Eq. 11-13 on encoder embeddings z [N, d] with SIDs [N, L] and the CVPM mask [N, N]."""
    config = config or HaMRConfig()
    distance = cosine_distance(embeddings)
    h = hamming(codes)
    full = (h == 0) & mask
    partial = (h > 0) & (h <= config.radius) & mask
    full_term = (config.m_full - distance).clamp_min(0)[full].sum() / (full.sum() + config.eps)
    partial_term = (config.m_partial - distance).clamp_min(0)[partial].sum() / (partial.sum() + config.eps)
    return config.lambda_full * full_term + config.lambda_partial * partial_term
