"""AdaSID's adaptive collision regulation (AdaSID Eq. 2-14).

Over the in-batch candidate pairs P = {(i, j): i != j, o_ij > 0} (Eq. 2), o_ij the number of levels at which the
SIDs agree, with the cosine distance d_ij = 1 - sim_ij of the encoder outputs (Eq. 3, 5):
- semantic-adaptive relaxation (Eq. 5-7): g_ij = 1[sim_ij >= eta_{o_ij}], with thresholds eta_1 <= ... <= eta_L
  growing with the overlap depth; a relaxed pair (g_ij = 1) is not repelled;
- load-adaptive strengthening (Eq. 8-10): c_ij counts the pairs of P with the same layer-wise signature kappa_ij,
  and a_ij = g(c_ij; f_min, f_max, d_max, alpha) grows with it, bounded;
- progress-adaptive rebalancing (Eq. 11-12): tau = clip((t - T_start) / (T_end - T_start), 0, 1),
  lambda_col = 1 - (1 - lambda_col_min) tau, lambda_cf = lambda_cf_max tau;
- L_col^ada = sum_{P} a_ij (1 - g_ij) max(0, m_ij - d_ij) (Eq. 4, 13), weighted by lambda_col in Eq. 14 while
  lambda_cf weights the collaborative loss.

What the paper leaves open, and what is chosen here:
- g's form: g(c) = f_min + (f_max - f_min) * min(c / d_max, 1) ** alpha, bounded in [f_min, f_max] and increasing;
  f_min = 1 (never weaker than the base penalty), d_max = 32 and alpha = 1 are this toolkit's defaults, not the
  paper's (it gives none);
- m_ij, "a margin determined by the overlap type or severity": m_full for a full overlap (o_ij = L), m_partial
  otherwise, both 1 by default (a retained pair is pushed to orthogonal or beyond). A pair is repelled only when
  its gate is shut, sim_ij < eta_o, so d_ij > 1 - eta_o, and the hinge acts only when d_ij < m_ij: margins of
  1 - eta_o or less can never act. QuaSID's HaMR margins (0.5, 0.8), which AdaSID's "following prior overlap-aware
  regularization" suggests, are such margins under AdaSID's thresholds (1 - eta_o >= 0.70), so they are not used;
  a margin that cannot act at any depth it serves is a configuration error;
- P excludes pairs of the same underlying item (`ids`), like QuaSID's CVPM, so duplicates neither count as load
  nor get repelled;
- Eq. 13 is a sum; `reduction="mean"` (default) divides it by |P| so that its scale does not grow with the
  batch size, `reduction="sum"` is the literal Eq. 13.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from align3gr.errors import ConfigError, check_numbers
from align3gr.tokenize.losses.hamr import cosine_distance


@dataclass
class AdaSIDConfig:
    """Hyperparameters with the paper's names. Defaults from AdaSID 5.1.4 (eta, f_max, T_start/T_end,
    lambda_col_min, lambda_cf_max are candidates of its grid); see the module docstring for the margins, f_min,
    d_max and alpha, which it does not give."""

    eta: list[float] = field(default_factory=lambda: [0.18, 0.24, 0.30])  # eta_o for overlap depth o = 1..L
    f_min: float = 1.0
    f_max: float = 2.0
    d_max: float = 32.0
    alpha: float = 1.0
    m_full: float = 1.0
    m_partial: float = 1.0
    t_start: int = 3000
    t_end: int = 90000
    lambda_col_min: float = 0.05
    lambda_cf_max: float = 0.25
    reduction: str = "mean"

    def __post_init__(self) -> None:
        check_numbers(self, ("f_min", "f_max", "d_max", "alpha", "m_full", "m_partial", "lambda_cf_max"),
                      prefix="AdaSID ")  # fmt: skip
        if any(a > b for a, b in zip(self.eta, self.eta[1:], strict=False)):
            raise ConfigError(f"AdaSID eta={self.eta}: thresholds must not decrease with depth (AdaSID Eq. 6)")
        if not self.t_end > self.t_start >= 0:
            raise ConfigError(f"AdaSID needs 0 <= t_start < t_end (Eq. 11's progress); got t_start={self.t_start}, "
                              f"t_end={self.t_end}")  # fmt: skip
        for margin, depths in (("m_partial", self.eta[:-1]), ("m_full", self.eta[-1:])):
            if depths and 1 - getattr(self, margin) >= max(depths):
                raise ConfigError(
                    f"AdaSID {margin}={getattr(self, margin)} can never act: a pair is repelled only while its "
                    f"similarity is below eta_o (at most {max(depths)} at the depths it serves), i.e. at a cosine "
                    f"distance above {1 - max(depths):.2f}, and the hinge max(0, m - d) is 0 there; set it above that"
                )
        if not 0 < self.f_min <= self.f_max:
            raise ConfigError(f"AdaSID needs 0 < f_min <= f_max; got f_min={self.f_min}, f_max={self.f_max}")
        if self.d_max <= 0 or self.alpha <= 0:
            raise ConfigError(f"AdaSID d_max={self.d_max} and alpha={self.alpha}: both must be > 0")
        if not 0 <= self.lambda_col_min <= 1 or self.lambda_cf_max < 0:
            raise ConfigError("AdaSID needs 0 <= lambda_col_min <= 1 and lambda_cf_max >= 0")
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"AdaSID reduction={self.reduction!r}: expected 'mean' or 'sum'")


MAX_PACKED_LEVELS = 62
"""The most levels whose agreement packs into the bits of one (signed 64-bit) integer."""


def level_agreement(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """kappa_ij (Eq. 8) of SIDs [N, L] packed into the bits of one integer ([N, N], bit l set when level l agrees)
    and the overlap depth o_ij ([N, N], the number of levels that agree), from one [N, N] comparison per level."""
    if codes.shape[1] > MAX_PACKED_LEVELS:
        raise ConfigError(f"AdaSID packs the levels' agreement into one integer: at most {MAX_PACKED_LEVELS} levels, "
                          f"the SIDs have {codes.shape[1]}")  # fmt: skip
    signature = torch.zeros(codes.shape[0], codes.shape[0], dtype=torch.long, device=codes.device)
    depth = torch.zeros(signature.shape, dtype=torch.uint8, device=codes.device)  # counted in bytes: less to move
    for level in range(codes.shape[1]):
        agree = codes[:, level].unsqueeze(1) == codes[:, level].unsqueeze(0)
        signature |= agree.long() << level
        depth += agree
    return signature, depth.long()


def relaxation_gate(embeddings: torch.Tensor, depth: torch.Tensor, eta: list[float]) -> torch.Tensor:
    """Eq. 5-7: [N, N] g_ij = 1[sim_ij >= eta_{o_ij}] as floats; 0 where there is no overlap (o_ij = 0)."""
    similarity = 1 - cosine_distance(embeddings)
    thresholds = torch.tensor([float("inf"), *eta], dtype=similarity.dtype, device=similarity.device)[depth]
    return (similarity >= thresholds).float()


def collision_load(signature: torch.Tensor, candidates: torch.Tensor, levels: int) -> torch.Tensor:
    """Eq. 8-9: [N, N] c_ij, the number of candidate pairs (u, v) with kappa_uv = kappa_ij; 0 off the candidates.
    kappa is the packed signature of `level_agreement`, counted with `bincount` while its 2**L counts are no more than
    the pairs (a small fraction of a row-wise `unique` of the [N, N, L] agreement tensor's cost on CPU), with a 1-D
    `unique` beyond: the same counts either way."""
    kept = signature[candidates]
    if 2**levels <= kept.numel():
        counts = torch.bincount(kept, minlength=2**levels)[kept]
    else:
        _, inverse, counts = torch.unique(kept, return_inverse=True, return_counts=True)
        counts = counts[inverse]
    load = torch.zeros(candidates.shape, device=candidates.device)
    load[candidates] = counts.float()
    return load


def load_coefficient(load: torch.Tensor, config: AdaSIDConfig) -> torch.Tensor:
    """Eq. 10: a_ij = f_min + (f_max - f_min) * min(c_ij / d_max, 1) ** alpha."""
    return config.f_min + (config.f_max - config.f_min) * (load / config.d_max).clamp(max=1.0) ** config.alpha


def progress_weights(step: int, config: AdaSIDConfig) -> tuple[float, float]:
    """Eq. 11-12: (lambda_col(tau), lambda_cf(tau)) at training step `step`."""
    tau = min(max((step - config.t_start) / max(1, config.t_end - config.t_start), 0.0), 1.0)
    return 1 - (1 - config.lambda_col_min) * tau, config.lambda_cf_max * tau


@dataclass
class AdaSIDTerms:
    """The pairwise quantities of Eq. 2-13 on one batch, all [N, N]."""

    candidates: torch.Tensor  # P
    depth: torch.Tensor  # o_ij
    gate: torch.Tensor  # g_ij
    load: torch.Tensor  # c_ij
    coefficient: torch.Tensor  # a_ij
    margin: torch.Tensor  # m_ij
    penalty: torch.Tensor  # a_ij (1 - g_ij) max(0, m_ij - d_ij), 0 off P


def adasid_terms(
    embeddings: torch.Tensor, codes: torch.Tensor, ids: torch.Tensor, config: AdaSIDConfig | None = None
) -> AdaSIDTerms:
    """Eq. 2-13 for encoder outputs z [N, d], SIDs [N, L] and underlying item IDs [N]."""
    config = config or AdaSIDConfig()
    if len(config.eta) != codes.shape[1]:
        raise ConfigError(f"AdaSID eta has {len(config.eta)} thresholds; the SIDs have {codes.shape[1]} levels")
    signature, depth = level_agreement(codes)
    candidates = (signature > 0) & (ids.unsqueeze(0) != ids.unsqueeze(1))
    gate = relaxation_gate(embeddings, depth, config.eta)
    load = collision_load(signature, candidates, codes.shape[1])
    coefficient = load_coefficient(load, config)
    margin = torch.where(depth == codes.shape[1], config.m_full, config.m_partial)
    hinge = (margin - cosine_distance(embeddings)).clamp_min(0)
    penalty = torch.where(candidates, coefficient * (1 - gate) * hinge, torch.zeros_like(hinge))
    return AdaSIDTerms(candidates, depth, gate, load, coefficient, margin, penalty)


def adasid_collision_loss(
    embeddings: torch.Tensor, codes: torch.Tensor, ids: torch.Tensor, config: AdaSIDConfig | None = None
) -> torch.Tensor:
    """L_col^ada (Eq. 13), summed or averaged over P (`config.reduction`); weight it by lambda_col(tau)."""
    config = config or AdaSIDConfig()
    terms = adasid_terms(embeddings, codes, ids, config)
    if config.reduction == "sum":
        return terms.penalty.sum()
    return terms.penalty.sum() / terms.candidates.sum().clamp_min(1)
