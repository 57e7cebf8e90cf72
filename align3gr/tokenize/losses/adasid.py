"""AdaSID's adaptive collision regulation (seed 002, Eq. 2-14).

For in-batch pairs whose SIDs overlap (o_ij = number of levels with the same code > 0):
- semantic-adaptive relaxation (Eq. 5-7): the gate g_ij = 1[sim_ij >= eta_{o_ij}] spares pairs that are close
  enough in the encoder space for their overlap depth, with thresholds growing with depth;
- load-adaptive strengthening (Eq. 8-10): the load c_ij counts in-batch overlap pairs with the same layer-wise
  signature kappa_ij, and a_ij = g(c_ij) grows with it, bounded in [f_min, f_max];
- progress-adaptive rebalancing (Eq. 11-12): the collision weight decays from 1 to lambda_col_min and the
  collaborative weight grows from 0 to lambda_cf_max between T_start and T_end.
L_col^ada = sum a_ij (1 - g_ij) max(0, m_ij - d_ij) (Eq. 13).

The paper leaves g's exact form, d_max, alpha and the margins m_ij open; here g(c) = f_min + (f_max - f_min) *
min(c / d_max, 1) ** alpha, and m_ij is the QuaSID margin of the pair's depth (m_full for a full overlap,
m_partial otherwise). The sum of Eq. 13 is averaged over the overlapping pairs (`reduction="mean"`) so that its
scale does not grow with the batch size; `reduction="sum"` gives the literal Eq. 13.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional


@dataclass
class AdaSIDConfig:
    """Hyperparameters with the paper's names; defaults from its implementation details (5.1.4)."""

    eta: list[float] = field(default_factory=lambda: [0.18, 0.24, 0.30])  # one threshold per overlap depth
    f_min: float = 1.0
    f_max: float = 2.0
    d_max: float = 32.0
    alpha: float = 1.0
    m_full: float = 0.8
    m_partial: float = 0.5
    t_start: int = 3000
    t_end: int = 90000
    lambda_col_min: float = 0.05
    lambda_cf_max: float = 0.25
    reduction: str = "mean"


def overlap_depth(codes: torch.Tensor) -> torch.Tensor:
    """o_ij: [N, N] number of levels at which two SIDs agree."""
    return (codes.unsqueeze(1) == codes.unsqueeze(0)).sum(-1)


def relaxation_gate(embeddings: torch.Tensor, depth: torch.Tensor, eta: list[float]) -> torch.Tensor:
    """Eq. 5-7: g_ij = 1[sim_ij >= eta_{o_ij}] (0 where there is no overlap)."""
    e = functional.normalize(embeddings, dim=-1)
    similarity = e @ e.T
    thresholds = torch.tensor([float("inf"), *eta], dtype=similarity.dtype)[depth.clamp(max=len(eta))]
    return (similarity >= thresholds).float()


def collision_load(codes: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Eq. 8-9: c_ij, the number of candidate pairs sharing pair (i, j)'s signature kappa_ij (0 elsewhere)."""
    signature = codes.unsqueeze(1) == codes.unsqueeze(0)  # [N, N, L]
    weights = 2 ** torch.arange(codes.shape[1])
    keys = (signature.long() * weights).sum(-1)
    counts = torch.bincount(keys[candidates], minlength=int(weights.sum()) + 1)
    return torch.where(candidates, counts[keys], torch.zeros_like(keys)).float()


def load_coefficient(load: torch.Tensor, config: AdaSIDConfig) -> torch.Tensor:
    """Eq. 10: a_ij = f_min + (f_max - f_min) * min(c_ij / d_max, 1) ** alpha, bounded and increasing."""
    return config.f_min + (config.f_max - config.f_min) * (load / config.d_max).clamp(max=1.0) ** config.alpha


def progress_weights(step: int, config: AdaSIDConfig) -> tuple[float, float]:
    """Eq. 11-12: (lambda_col(tau), lambda_cf(tau)) at training step `step`."""
    tau = min(max((step - config.t_start) / max(1, config.t_end - config.t_start), 0.0), 1.0)
    return 1 - (1 - config.lambda_col_min) * tau, config.lambda_cf_max * tau


def adasid_collision_loss(
    embeddings: torch.Tensor, codes: torch.Tensor, ids: torch.Tensor, config: AdaSIDConfig | None = None
) -> torch.Tensor:
    """Eq. 13 over the candidate pairs P = {(i, j): i != j (as items), o_ij > 0}."""
    config = config or AdaSIDConfig()
    depth = overlap_depth(codes)
    candidates = (depth > 0) & (ids.unsqueeze(0) != ids.unsqueeze(1))
    gate = relaxation_gate(embeddings, depth, config.eta)
    coefficient = load_coefficient(collision_load(codes, candidates), config)
    e = functional.normalize(embeddings, dim=-1)
    distance = 1 - e @ e.T
    margin = torch.where(depth == codes.shape[1], config.m_full, config.m_partial)
    terms = (coefficient * (1 - gate) * (margin - distance).clamp_min(0))[candidates]
    if config.reduction == "sum":
        return terms.sum()
    return terms.sum() / candidates.sum().clamp_min(1)
