"""DAS multi-view contrastive alignment (DAS 2.3, Eq. 5-10) between quantised SID representations and collaborative
representations (c_u, c_i). z_u and z_i are, as in DAS 2.3, "sum-pooling the codebook embeddings" of the chosen codes:
the alignment's gradient reaches the codebooks (not the encoder, which only chooses the codes). Every view is an
InfoNCE over the batch with inner-product logits <a, b> (the paper's form, `temperature` = 1) and in-batch negatives:

- dual U2I (Eq. 5-6): z_u with the clicked item's c_i (La_u2i_zu), c_u with the clicked item's z_i (La_u2i_zi);
- dual U2U / I2I (Eq. 7-8): z_u with the same user's c_u (La_u2u_zu), z_i with the same item's c_i (La_i2i_zi);
- dual co-occurrence U2U / I2I (Eq. 9-10): z_u with y_u, another user of the clicked item (La_co_u2u_zu), z_i with
  y_i, another item of the same user (La_co_i2i_zi); "two users who interact with the same ad", so y_u is never
  user b itself (nor y_i item b), and a row whose user (item) has no other partner is left out of that view;
- L_Align_all = the sum of the six; DAS weights it by beta in its total loss.

Rows b of a batch are clicked pairs (user b, item b). Another row's candidate can be a positive of row b as well,
not a negative, and is then masked out (the paper's negatives are plain in-batch samples; this masking is the
toolkit's addition, like Align3GR's U2I masking of a user's own training items):
- U2U: the rows of the same user; I2I: the rows of the same item;
- the U2I and co-occurrence views: the rows of the same user or the same item, and the training interactions
  (`interacted[b, j]`: user b clicked item j). In La_u2i_* item j is then one of user b's items; in La_co_u2u_zu
  row j's co-user y_j clicked item j, so it co-occurs with user b (it may be user b); in La_co_i2i_zi row j's
  co-item is an item of user j, which co-occurs with item b when user j clicked item b (`interacted[j, b]`).

The collaborative representations are the frozen collaborative encoder's (embed stage), or with `das_cf` the
debiased ones of DAS's ID-based CF model co-trained with the quantisers (`das_cf`, DAS 2.2), which the alignment then
trains too; a linear map per side (`DASAlignment.user_cf`, `.item_cf`) brings them to the code dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from align3gr.errors import check_numbers


@dataclass
class DASConfig:
    """beta weights L_Align_all (DAS: L_All = L_Sem_all + alpha L_CF_all + beta L_Align_all; beta = 0.5 in DAS
    4.1.3). The per-view weights (1 in DAS) allow ablations; `temperature` divides the logits (1 in DAS)."""

    beta: float = 0.5
    weight_u2i: float = 1.0
    weight_u2u_i2i: float = 1.0
    weight_co_occurrence: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_numbers(self, ("beta", "weight_u2i", "weight_u2u_i2i", "weight_co_occurrence"), prefix="DAS ")
        check_numbers(self, ("temperature",), positive=True, prefix="DAS ")


def info_nce(
    anchor: torch.Tensor, positive: torch.Tensor, temperature: float = 1.0, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """-mean_b log( exp(<a_b, p_b>/t) / sum_j exp(<a_b, p_j>/t) ): row b's positive is p_b, the other rows of the
    batch are its negatives except where `exclude[b, j]` ([B, B]; the diagonal is never excluded)."""
    logits = anchor @ positive.T / temperature
    if exclude is not None:
        off_diagonal = ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(exclude & off_diagonal, float("-inf"))
    return functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _any(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Union of optional [B, B] masks (None when all are None)."""
    given = [mask for mask in masks if mask is not None]
    return torch.stack(given).any(0) if given else None


def _subset_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None,
    rows: torch.Tensor | None,
) -> torch.Tensor:
    """`info_nce` over the rows [B] marked in `rows` only (all when None); 0 when no row is left."""
    if rows is not None:
        anchor, positive = anchor[rows], positive[rows]
        exclude = None if exclude is None else exclude[rows][:, rows]
    if not len(anchor):
        return anchor.new_zeros(())
    return info_nce(anchor, positive, temperature, exclude)


class DASAlignment(nn.Module):
    """L_Align_all = La_u2i_zu + La_u2i_zi + La_u2u_zu + La_i2i_zi + La_co_u2u_zu + La_co_i2i_zi (weighted)."""

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
        same_user: torch.Tensor | None = None,
        interacted: torch.Tensor | None = None,
        co_user_rows: torch.Tensor | None = None,
        co_item_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The six views and `total` = beta * weighted sum. `z_*` [B, code_dim] are the quantised representations,
        `cf_*` raw collaborative features, `co_user` [B, code_dim] the quantised representation of another user of
        item b, `co_item` of another item of user b; `same_item` / `same_user` [B, B] mark rows with the same item
        / the same user, `interacted` [B, B] the training interactions (user b, item j); `co_user_rows` /
        `co_item_rows` [B] the rows that have a co-occurrence partner (all when None)."""
        c_u, c_i, t = self.user_cf(cf_user), self.item_cf(cf_item), self.config.temperature
        of_user = _any(same_item, same_user, interacted)
        of_item = _any(same_item, same_user, None if interacted is None else interacted.T)
        views = {
            "u2i_zu": info_nce(z_user, c_i, t, of_user),
            "u2i_zi": info_nce(c_u, z_item, t, of_user),
            "u2u_zu": info_nce(z_user, c_u, t, same_user),
            "i2i_zi": info_nce(z_item, c_i, t, same_item),
            "co_u2u_zu": _subset_nce(z_user, co_user, t, of_user, co_user_rows),
            "co_i2i_zi": _subset_nce(z_item, co_item, t, of_item, co_item_rows),
        }
        weights = {"u2i_zu": self.config.weight_u2i, "u2i_zi": self.config.weight_u2i}
        weights |= {"u2u_zu": self.config.weight_u2u_i2i, "i2i_zi": self.config.weight_u2u_i2i}
        weights |= {"co_u2u_zu": self.config.weight_co_occurrence, "co_i2i_zi": self.config.weight_co_occurrence}
        views["total"] = self.config.beta * sum(weights[name] * value for name, value in views.items())
        return views
