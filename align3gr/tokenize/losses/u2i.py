"""The U2I sampled-softmax behaviour loss of Align3GR (Eq. 1) and the U2I AUC that drives its two-phase
schedule (Eq. 2: alpha = 1, gamma = 0 "monitored via AUC", then alpha = 0.1, gamma = 1).

    L_U2I = -1/|B| sum_{(u, i+) in B} log( exp(u.v_{i+}) / (exp(u.v_{i+}) + sum_{j in N_u} exp(u.v_j)) )

u and v are the user and item SC embeddings; N_u are the other items of the batch ("randomly sampled within the
batch"), except the user's own training items: those are false negatives and are masked out.

Usage: `known = InteractionSet(train_users, train_items, num_items)` once, then per batch of (user, item) rows
`u2i_loss(u, v, false_negative_mask(users, items, known))`.
"""

from __future__ import annotations

import torch
from torch.nn import functional


class InteractionSet:
    """Membership test for (user, item) training pairs, vectorised: a dense boolean matrix when users x items
    fits in `dense_limit` entries, otherwise sorted keys and a binary search (catalogues of millions)."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, num_items: int, dense_limit: int = 1 << 26) -> None:
        self.num_items = num_items
        self.keys = torch.unique(users.long() * num_items + items.long())
        num_users = int(users.max()) + 1 if len(users) else 0
        self.dense = None
        if num_users * num_items <= dense_limit:
            self.dense = torch.zeros(num_users * num_items, dtype=torch.bool, device=self.keys.device)
            self.dense[self.keys] = True
            self.dense = self.dense.view(num_users, num_items)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Boolean tensor of the broadcast shape of `users` and `items`: is (user, item) a training pair?"""
        users, items = torch.broadcast_tensors(users.long(), items.long())
        if not len(self.keys):
            return torch.zeros(users.shape, dtype=torch.bool, device=users.device)
        if self.dense is not None:
            inside = users < len(self.dense)
            return self.dense[users.clamp(max=len(self.dense) - 1), items] & inside
        keys = users * self.num_items + items
        position = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return self.keys[position] == keys


def false_negative_mask(users: torch.Tensor, items: torch.Tensor, known: InteractionSet) -> torch.Tensor:
    """[B, B] True where in-batch item j is one of user b's own training items (never a negative for row b);
    the diagonal (each row's positive) is False."""
    return known.contains(users.unsqueeze(1), items.unsqueeze(0)).fill_diagonal_(False)


def u2i_loss(user_emb: torch.Tensor, item_emb: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 for B rows (user b, item b): row b's positive is item b, the other items of the batch are its
    negatives unless `exclude[b, j]` (a [B, B] boolean mask, e.g. `false_negative_mask`)."""
    logits = user_emb @ item_emb.T
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _auc(positive: torch.Tensor, negative: torch.Tensor, keep: torch.Tensor | None) -> float:
    """Share of (positive [N, 1], negative [N, M]) score pairs ranked right, ties counting half, over `keep`."""
    wins = (positive > negative).float() + 0.5 * (positive == negative).float()
    if keep is None:
        return wins.mean().item()
    return float((wins * keep).sum() / keep.sum().clamp_min(1))


@torch.no_grad()
def u2i_auc(
    user_emb: torch.Tensor, positive_emb: torch.Tensor, negative_emb: torch.Tensor, keep: torch.Tensor | None = None
) -> float:
    """AUC of positive over sampled negative scores: user [N, d], positive [N, d], negatives [N, M, d]; `keep`
    [N, M] drops sampled negatives that are really positives."""
    positive = (user_emb * positive_emb).sum(-1, keepdim=True)
    negative = torch.einsum("nd,nmd->nm", user_emb, negative_emb)
    return _auc(positive, negative, keep)


@torch.no_grad()
def in_batch_auc(user_emb: torch.Tensor, item_emb: torch.Tensor, exclude: torch.Tensor | None = None) -> float:
    """AUC of row b's positive item b over the other items of the batch, the negatives of Eq. 1 (`exclude` as in
    `u2i_loss`)."""
    logits = user_emb @ item_emb.T
    keep = ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    if exclude is not None:
        keep &= ~exclude
    return _auc(logits.diagonal().unsqueeze(1), logits, keep)
