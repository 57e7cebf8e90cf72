"""The U2I sampled-softmax behaviour loss of Align3GR (seed 003, Eq. 1) and the U2I AUC that drives its
two-phase schedule.

    L_U2I = -1/|B| sum_{(u, i+) in B} log( exp(u.v_{i+}) / (exp(u.v_{i+}) + sum_{j in N_u} exp(u.v_j)) )

N_u are the other items of the batch, except those the user interacted with (false negatives).
"""

from __future__ import annotations

import torch
from torch.nn import functional


class InteractionSet:
    """Membership test for (user, item) training pairs, vectorised: a dense boolean matrix when users x items
    fits in `dense_limit` bytes, otherwise sorted keys and a binary search (catalogues of millions)."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, num_items: int, dense_limit: int = 1 << 26) -> None:
        self.num_items = num_items
        self.keys = torch.unique(users.long() * num_items + items.long())
        num_users = int(users.max()) + 1 if len(users) else 0
        self.dense = None
        if num_users * num_items <= dense_limit:
            self.dense = torch.zeros(num_users * num_items, dtype=torch.bool)
            self.dense[self.keys] = True
            self.dense = self.dense.view(num_users, num_items)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            inside = users < len(self.dense)
            return self.dense[users.clamp(max=len(self.dense) - 1), items] & inside
        keys = users.long() * self.num_items + items.long()
        position = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return self.keys[position] == keys


def false_negative_mask(users: torch.Tensor, items: torch.Tensor, known: InteractionSet) -> torch.Tensor:
    """[B, B] True where in-batch item j is one of user b's own items (never a negative), diagonal excluded."""
    mask = known.contains(users.unsqueeze(1).expand(-1, len(items)), items.unsqueeze(0).expand(len(users), -1))
    return mask.fill_diagonal_(False)


def u2i_loss(user_emb: torch.Tensor, item_emb: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 for B pairs: row b's positive is item b; the other items are negatives unless `exclude[b, j]`."""
    logits = user_emb @ item_emb.T
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


@torch.no_grad()
def u2i_auc(
    user_emb: torch.Tensor, positive_emb: torch.Tensor, negative_emb: torch.Tensor, keep: torch.Tensor | None = None
) -> float:
    """AUC of positive over negative scores: user [N, d], positive [N, d], negatives [N, M, d]; ties count
    half; `keep` [N, M] drops sampled negatives that are really positives."""
    positive = (user_emb * positive_emb).sum(-1, keepdim=True)
    negative = torch.einsum("nd,nmd->nm", user_emb, negative_emb)
    wins = (positive > negative).float() + 0.5 * (positive == negative).float()
    if keep is None:
        return wins.mean().item()
    return float((wins * keep).sum() / keep.sum().clamp_min(1))
