"""Deterministic k-means in torch, used to initialise each RQ-VAE codebook on real data."""

from __future__ import annotations

import torch


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, K] squared Euclidean distances, computed in one matrix product."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1)).clamp_min(0)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iterations: int = 30, generator: torch.Generator | None = None) -> torch.Tensor:
    """`k` centroids of `x` [N, d] by Lloyd's algorithm from a k-means++ start; an empty cluster is re-seeded
    with the point farthest from its centroid, so every centroid ends up on data."""
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(x)}")
    x = x.float()
    first = torch.randint(len(x), (1,), generator=generator)
    centroids = x[first]
    nearest = squared_distances(x, centroids).squeeze(1)
    for _ in range(1, k):
        probabilities = nearest / nearest.sum() if nearest.sum() > 0 else torch.full_like(nearest, 1 / len(x))
        chosen = torch.multinomial(probabilities, 1, generator=generator)
        centroids = torch.cat([centroids, x[chosen]])
        nearest = torch.minimum(nearest, squared_distances(x, x[chosen]).squeeze(1))
    for _ in range(iterations):
        distances = squared_distances(x, centroids)
        assignment = distances.argmin(1)
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        updated = sums / counts.clamp_min(1).unsqueeze(1)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            far = distances.gather(1, assignment.unsqueeze(1)).squeeze(1).topk(len(empty)).indices
            updated[empty] = x[far]
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids
