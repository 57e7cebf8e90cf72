"""QuaSID's collaborative dual-tower contrastive alignment (QuaSID 4.1, Eq. 6-7), the last term of its objective

    L = L_rec + L_rq + L_HaMR + L_cl    (QuaSID Eq. 14)

On a batch of B item-item co-engagement pairs (trigger i_t^m, target i_p^m), both encoded by the item tokenizer's
encoder (the shared f_theta of Eq. 3) and normalised to e_t^m, e_p^n:

    S_mn = <e_t^m, e_p^n> / tau                                                              (Eq. 6)
    L_cl = -lambda_cl / B sum_m log( exp(S_mm) / sum_n 1[M_mn = 1] exp(S_mn) )              (Eq. 7)

with M_mn = 0 for n != m when id(e_t^m) = id(e_p^n): a target that is the anchor's own item is no negative.

What the paper leaves open, and what is chosen here:
- the pairs: QuaSID builds them with Swing plus data cleaning; here two items are co-engaged when they are at most
  `window` positions apart in a user's training sequence (1: consecutive), in both orders (co-engagement is
  symmetric, and Eq. 7's mask then drops the reversed copy of a row's own pair), each pair once;
- tau: QuaSID gives no value; 0.1 here. lambda_cl = 0.1 is QuaSID 5.6's best, the batch of 256 pairs its A.2;
- `mask`: "paper" is Eq. 7's M, "none" the plain InfoNCE (an ablation), "related" also drops the rows whose target
  is co-engaged with the anchor's trigger, a copy of the anchor's own target included (not in QuaSID: those are
  positives too, like the U2I loss's masking of a user's own items).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from align3gr.errors import ConfigError
from align3gr.tokenize.losses.das import info_nce
from align3gr.tokenize.losses.u2i import InteractionSet

MASKS = ("none", "paper", "related")


@dataclass
class QuaSIDCLConfig:
    """Hyperparameters with the paper's names (lambda_cl, tau as `temperature`); see the module docstring."""

    lambda_cl: float = 0.1
    temperature: float = 0.1
    mask: str = "paper"
    window: int = 1
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.lambda_cl < 0:
            raise ConfigError(f"QuaSID lambda_cl={self.lambda_cl}: must be >= 0 (QuaSID Eq. 7)")
        if self.temperature <= 0:
            raise ConfigError(f"QuaSID temperature={self.temperature}: must be > 0 (tau of QuaSID Eq. 6)")
        if self.mask not in MASKS:
            raise ConfigError(f"QuaSID mask={self.mask!r}: expected one of {', '.join(MASKS)}")
        if self.window < 1:
            raise ConfigError(f"QuaSID window={self.window}: must be >= 1 (1: consecutive items are co-engaged)")
        if self.batch_size < 2:
            raise ConfigError(f"QuaSID batch_size={self.batch_size}: needs >= 2 pairs (in-batch negatives)")


def co_engagement_pairs(sequences: list[list[int]], window: int) -> torch.Tensor:
    """[Q, 2] distinct (trigger, target) rows: two different items at most `window` apart in one sequence, both
    orders, sorted."""
    rows = [(a, b) for items in sequences for k, a in enumerate(items) for b in items[k + 1 : k + 1 + window] if a != b]
    pairs = torch.tensor(rows, dtype=torch.long).reshape(-1, 2)
    return torch.unique(torch.cat([pairs, pairs.flip(1)]), dim=0)


def excluded_negatives(
    triggers: torch.Tensor, targets: torch.Tensor, mask: str, known: InteractionSet | None = None
) -> torch.Tensor | None:
    """[B, B] True where target n is no negative of trigger m (1 - M_mn of Eq. 7, off the diagonal), or None for
    `mask` "none"; "related" needs the co-engagement pairs as `known` (trigger, target) membership."""
    if mask == "none":
        return None
    exclude = triggers.unsqueeze(1) == targets.unsqueeze(0)
    if mask == "related":
        exclude |= known.contains(triggers.unsqueeze(1), targets.unsqueeze(0))
    return exclude.fill_diagonal_(False)


def quasid_cl_loss(
    trigger_z: torch.Tensor, target_z: torch.Tensor, exclude: torch.Tensor | None, config: QuaSIDCLConfig
) -> torch.Tensor:
    """Eq. 6-7 on the encoder outputs [B, d] of the triggers and targets, lambda_cl included."""
    e_t, e_p = functional.normalize(trigger_z, dim=-1), functional.normalize(target_z, dim=-1)
    return config.lambda_cl * info_nce(e_t, e_p, config.temperature, exclude)
