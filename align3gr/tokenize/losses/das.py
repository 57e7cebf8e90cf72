"""DAS multi-view contrastive alignment (seed 000, 2.3, Eq. 5-10) between quantised SID representations (z_u,
z_i) and collaborative representations (c_u, c_i), all InfoNCE with in-batch negatives:

- dual U2I (Eq. 5-6): z_u with the clicked item's c_i, and c_u with the clicked item's z_i;
- dual U2U / I2I (Eq. 7-8): z_u with the same user's c_u, z_i with the same item's c_i;
- dual co-occurrence U2U / I2I (Eq. 9-10): z_u with another user of the same item, z_i with another item of
  the same user.

The collaborative features come from the frozen collaborative encoder of the embed stage; a linear map per side
(`DASAlignment.user_cf`, `.item_cf`) brings them to the code dimension. DAS's CF debiasing network (2.2) is not
part of this module: the collaborative encoder here is trained on the training split, not debiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional


@dataclass
class DASConfig:
    """Weights of the six views (DAS sums them with weight 1, L_Align_all) and the InfoNCE temperature."""

    weight_u2i: float = 1.0
    weight_u2u_i2i: float = 1.0
    weight_co_occurrence: float = 1.0
    temperature: float = 1.0


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float = 1.0, exclude=None) -> torch.Tensor:
    """-mean_b log( exp(<a_b, p_b>/t) / sum_j exp(<a_b, p_j>/t) ): row b's positive is p_b, the other rows of
    the batch are negatives (except where `exclude[b, j]`, e.g. another copy of the same item)."""
    logits = anchor @ positive.T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude & ~torch.eye(len(logits), dtype=torch.bool), float("-inf"))
    return functional.cross_entropy(logits, torch.arange(len(logits)))


class DASAlignment(nn.Module):
    """L_Align_all = La_u2i_zu + La_u2i_zi + La_u2u_zu + La_i2i_zi + La_co_u2u_zu + La_co_i2i_zi."""

    def __init__(self, user_cf_dim: int, item_cf_dim: int, code_dim: int, config: DASConfig | None = None) -> None:
        super().__init__()
        self.config = config or DASConfig()
        self.user_cf = nn.Linear(user_cf_dim, code_dim)
        self.item_cf = nn.Linear(item_cf_dim, code_dim)

    def forward(
        self,
        z_user: torch.Tensor,
        z_item: torch.Tensor,
        cf_user: torch.Tensor,
        cf_item: torch.Tensor,
        co_user: torch.Tensor,
        co_item: torch.Tensor,
        same_item: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Rows b are clicked pairs (user b, item b); `co_user` [B, d] is the quantised representation of another
        user of item b, `co_item` of another item of user b; `same_item` [B, B] marks rows with the same item."""
        c_u, c_i, t = self.user_cf(cf_user), self.item_cf(cf_item), self.config.temperature
        views = {
            "u2i_zu": info_nce(z_user, c_i, t, same_item),
            "u2i_zi": info_nce(c_u, z_item, t, same_item),
            "u2u_zu": info_nce(z_user, c_u, t),
            "i2i_zi": info_nce(z_item, c_i, t, same_item),
            "co_u2u_zu": info_nce(z_user, co_user, t),
            "co_i2i_zi": info_nce(z_item, co_item, t, same_item),
        }
        weights = {"u2i_zu": self.config.weight_u2i, "u2i_zi": self.config.weight_u2i}
        weights |= {"u2u_zu": self.config.weight_u2u_i2i, "i2i_zi": self.config.weight_u2u_i2i}
        weights |= {"co_u2u_zu": self.config.weight_co_occurrence, "co_i2i_zi": self.config.weight_co_occurrence}
        views["total"] = sum(weights[name] * value for name, value in views.items())
        return views
