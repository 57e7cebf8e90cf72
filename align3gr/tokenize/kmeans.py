"""Deterministic k-means in torch, used to initialise each RQ-VAE codebook on real data, as DAS does "to prevent
codebook collapse" (2.1.2; Align3GR does not say how its codebooks start). Distances are computed in row chunks so
that a catalogue of millions never holds an [N, K] matrix at once."""

from __future__ import annotations

import torch

CHUNK_ROWS = 65536


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, K] squared Euclidean distances, computed in one matrix product."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1)).clamp_min(0)


def nearest(
    x: torch.Tensor, centroids: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of the nearest centroid [N], its squared distance [N]), `chunk_rows` rows at a time."""
    pieces = [squared_distances(chunk, centroids).min(1) for chunk in x.split(chunk_rows)]
    return torch.cat([p.indices for p in pieces]), torch.cat([p.values for p in pieces])


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iterations: int = 30, generator: torch.Generator | None = None) -> torch.Tensor:
    """`k` centroids [k, d] of `x` [N, d] by Lloyd's algorithm from a k-means++ start. An empty cluster is
    re-seeded with the points farthest from their centroids, so every centroid ends up on data. The result depends
    only on `x`, `k`, `iterations` and the generator's state, a CPU one whatever `x`'s device (the seeding draws
    are made on the CPU)."""
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(x)}")
    x = x.float()
    centroids = x[torch.randint(len(x), (1,), generator=generator).to(x.device)]
    closest = squared_distances(x, centroids).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        probabilities = closest / total if total > 0 else torch.full_like(closest, 1 / len(x))
        chosen = x[torch.multinomial(probabilities.cpu(), 1, generator=generator).to(x.device)]
        centroids = torch.cat([centroids, chosen])
        closest = torch.minimum(closest, squared_distances(x, chosen).squeeze(1))
    for _ in range(iterations):
        assignment, distance = nearest(x, centroids)
        counts = torch.bincount(assignment, minlength=k)
        updated = torch.zeros_like(centroids).index_add_(0, assignment, x) / counts.clamp_min(1).unsqueeze(1)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            updated[empty] = x[distance.topk(len(empty)).indices]
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids
