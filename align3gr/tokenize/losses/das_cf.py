"""DAS's ID-based CF Debias Model (ICDM, DAS 2.2, Eq. 3-4), co-trained with the quantisers: DAS's one-stage
co-training (Figure 2 (3)), in place of the frozen collaborative features of the `embed` stage.

Per side, a disentangling module (DAS's UDM for users, IDM for items) reads the row's ID embedding:
- an unbiased encoder gives the user's interest c_u^int (the item's content c_i^pro), a bias encoder the user's
  conformity c_u^con (the item's popularity c_i^pop);
- a third MLP maps the row's bias features to its real bias representation c_u^c (c_i^p), and the biased
  representation is c_u = MLP([c_u^int; c_u^c]) (c_i = MLP([c_i^pro; c_i^p]));
- L_sim = sum_b (1 - cos(c_u^con, c_u^c)) + (1 - cos(c_i^pop, c_i^p))    (Eq. 3): the bias encoders learn the bias,
  L_orth = sum_b cos^2(c_u^con, c_u^int) + cos^2(c_i^pop, c_i^pro)        (Eq. 4): the unbiased ones keep none of it;
- L_CF_all = L_cf_bias + L_cf_unbias + gamma (L_sim + L_orth), L_cf_bias the in-batch sampled softmax of the clicks
  on (c_u, c_i), L_cf_unbias on (c_u^int, c_i^pro); DAS weights it by alpha in L_All = L_Sem_all + alpha L_CF_all +
  beta L_Align_all (alpha = 1, gamma = 0.1 in DAS 4.1.3).

The debiased c_u^int and c_i^pro are the CF representations: DAS's alignment views (`das`) read them in place of the
frozen features, with gradients, so the alignment trains the CF model too; with `use_cf` they replace the frozen
collaborative block of the tokenizer input, unit-normalised per row.

What the paper leaves open, and what is chosen here:
- the bias features (DAS: impressions and clicks of an ad, a user's preference for popular ads): an item's
  log(1 + training interactions) and popularity percentile; a user's means of both over their training
  interactions; each column standardised;
- Eq. 4 as extracted divides a squared inner product by the product of the norms, which is not scale-free: the
  squared cosine is used, 0 exactly when the two representations are orthogonal;
- Eq. 3-4 sum over the batch; `reduction="mean"` (default) averages instead, so that gamma does not grow with the
  batch size, `reduction="sum"` is the literal sum;
- the sampled softmax masks a user's own training items out of the in-batch negatives, as the U2I loss does;
- the tokenizer reads the CF representations under a stop-gradient: its reconstruction target is its input, whose
  loss would otherwise shrink the CF block towards zero. The CF model learns from L_CF_all and the alignment only;
- `debias: false` is DAS Table 1's "Biased DAS": no bias encoder, L_CF_all = L_cf_bias, and the biased c_u, c_i are
  the CF representations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from align3gr.errors import ConfigError
from align3gr.tokenize.losses.u2i import u2i_loss
from align3gr.tokenize.rqvae import mlp


@dataclass
class DASCFConfig:
    """alpha and gamma as in DAS (4.1.3: 1 and 0.1); `dim` is the size of the ID embeddings and representations
    (DAS's code dimension, 32), `hidden_dim` the width of every MLP; see the module docstring for the rest."""

    alpha: float = 1.0
    gamma: float = 0.1
    dim: int = 32
    hidden_dim: int = 64
    debias: bool = True
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.gamma < 0:
            raise ConfigError(f"DAS CF alpha={self.alpha} and gamma={self.gamma}: both must be >= 0")
        if self.dim < 1 or self.hidden_dim < 1:
            raise ConfigError(f"DAS CF dim={self.dim} and hidden_dim={self.hidden_dim}: both must be >= 1")
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"DAS CF reduction={self.reduction!r}: expected 'mean' or 'sum'")


def _standardise(columns: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per column, so that the bias MLPs see features of one scale."""
    return (columns - columns.mean(0)) / columns.std(0, unbiased=False).clamp_min(1e-6)


def bias_features(pairs: torch.Tensor, num_users: int, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(user conformity features [U, 2], item popularity features [I, 2]) from the training (user, item) rows
    [P, 2]: an item's log(1 + interactions) and the share of items with fewer, a user's means of both over their
    interactions; each column standardised."""
    counts = torch.bincount(pairs[:, 1], minlength=num_items).float()
    percentile = torch.searchsorted(counts.sort().values, counts).float() / num_items
    items = torch.stack([counts.log1p(), percentile], 1)
    sums = items.new_zeros(num_users, 2).index_add_(0, pairs[:, 0], items[pairs[:, 1]])
    users = sums / torch.bincount(pairs[:, 0], minlength=num_users).clamp_min(1).unsqueeze(1)
    return _standardise(users), _standardise(items)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """The batch's sum (the literal Eq. 3-4) or mean."""
    return values.sum() if reduction == "sum" else values.mean()


def similarity_loss(bias: torch.Tensor, real_bias: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """One side of Eq. 3: 1 - cos(c^con, c^c) per row [B, d], summed or averaged."""
    return _reduce(1 - functional.cosine_similarity(bias, real_bias, dim=-1), reduction)


def orthogonality_loss(bias: torch.Tensor, unbiased: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """One side of Eq. 4: cos^2(c^con, c^int) per row [B, d], summed or averaged."""
    return _reduce(functional.cosine_similarity(bias, unbiased, dim=-1).pow(2), reduction)


@dataclass
class Towers:
    """One side's representations of a batch of rows, all [B, dim]."""

    unbiased: torch.Tensor  # c_u^int / c_i^pro
    bias: torch.Tensor | None  # c_u^con / c_i^pop (None without debiasing)
    real_bias: torch.Tensor  # c_u^c / c_i^p
    biased: torch.Tensor  # c_u / c_i


class Disentangling(nn.Module):
    """One side of ICDM (UDM or IDM) over the side's ID embeddings; its bias features are a buffer, saved with it."""

    def __init__(self, features: torch.Tensor, config: DASCFConfig) -> None:
        super().__init__()
        dim, hidden = config.dim, config.hidden_dim
        self.debias = config.debias
        self.register_buffer("features", features.float())
        self.ids = nn.Embedding(len(features), dim)
        nn.init.normal_(self.ids.weight, std=dim**-0.5)
        self.unbiased = mlp([dim, hidden, dim])
        self.bias = mlp([dim, hidden, dim]) if config.debias else None
        self.real_bias = mlp([features.shape[1], hidden, dim])
        self.biased = mlp([2 * dim, hidden, dim])

    def forward(self, rows: torch.Tensor) -> Towers:
        """All representations of the side's `rows` [B]."""
        embedding = self.ids(rows)
        unbiased, real_bias = self.unbiased(embedding), self.real_bias(self.features[rows])
        bias = self.bias(embedding) if self.bias is not None else None
        return Towers(unbiased, bias, real_bias, self.biased(torch.cat([unbiased, real_bias], -1)))

    def representation(self, rows: torch.Tensor) -> torch.Tensor:
        """The CF representation of `rows` [B]: the unbiased one, or the biased one without debiasing."""
        towers = self(rows)
        return towers.unbiased if self.debias else towers.biased


class DebiasedCF(nn.Module):
    """ICDM: the user and item disentangling modules and L_CF_all."""

    def __init__(self, user_features: torch.Tensor, item_features: torch.Tensor, config: DASCFConfig) -> None:
        super().__init__()
        self.config = config
        self.users = Disentangling(user_features, config)
        self.items = Disentangling(item_features, config)

    def side(self, side: str) -> Disentangling:
        """The "user" or "item" module."""
        return self.items if side == "item" else self.users

    def loss(self, users: torch.Tensor, items: torch.Tensor, exclude: torch.Tensor | None = None) -> dict:
        """L_CF_all on B clicks (user b, item b) and its parts: `bias`, and with debiasing `unbias` and
        `disentangled` (L_sim + L_orth); `exclude` [B, B] masks in-batch negatives as in `u2i_loss`."""
        u, i = self.users(users), self.items(items)
        losses = {"bias": u2i_loss(u.biased, i.biased, exclude)}
        total = losses["bias"]
        if self.config.debias:
            reduction = self.config.reduction
            losses["unbias"] = u2i_loss(u.unbiased, i.unbiased, exclude)
            losses["disentangled"] = (
                similarity_loss(u.bias, u.real_bias, reduction)
                + similarity_loss(i.bias, i.real_bias, reduction)
                + orthogonality_loss(u.bias, u.unbiased, reduction)
                + orthogonality_loss(i.bias, i.unbiased, reduction)
            )
            total = total + losses["unbias"] + self.config.gamma * losses["disentangled"]
        return losses | {"total": total}
