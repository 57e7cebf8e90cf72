"""Code-usage statistics of a code table: per level perplexity, utilisation and top-1 load (AdaSID 5.1.2), the SID
entropy of QuaSID (5.1.3: entropy of the empirical distribution of full codes), and the per-level V-measure against the
items' categories (UniSID's SID quality)."""

from __future__ import annotations

import numpy as np


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def level_statistics(codes: np.ndarray, codebook_sizes: list[int]) -> list[dict]:
    """Per level: perplexity exp(H), utilisation (share of codes used), top-1 load (share of the most used)."""
    out = []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=size)
        out.append(
            {
                "level": level,
                "codebook_size": size,
                "perplexity": float(np.exp(_entropy(counts))),
                "utilisation": float((counts > 0).mean()),
                "top1_load": float(counts.max() / max(1, counts.sum())),
            }
        )
    return out


def sid_entropy(codes: np.ndarray) -> float:
    """E_SID = -sum_s p(s) log p(s) over full codes s (QuaSID 5.1.3); higher means fewer shared codes."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return _entropy(counts)


def v_measure(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Homogeneity h = 1 - H(C|K)/H(C), completeness c = 1 - H(K|C)/H(K) and V = 2hc / (h + c) of a clustering K
    against classes C (Rosenberg and Hirschberg, 2007), from entropies of the empirical distributions."""
    _, classes = np.unique(labels, return_inverse=True)
    _, groups = np.unique(clusters, axis=0, return_inverse=True)
    pairs = np.stack([classes.ravel(), groups.ravel()], axis=1)
    h_class, h_group = _entropy(np.bincount(classes.ravel())), _entropy(np.bincount(groups.ravel()))
    h_joint = _entropy(np.unique(pairs, axis=0, return_counts=True)[1])
    homogeneity = 1.0 - (h_joint - h_group) / h_class if h_class > 0 else 1.0
    completeness = 1.0 - (h_joint - h_class) / h_group if h_group > 0 else 1.0
    total = homogeneity + completeness
    return {
        "homogeneity": homogeneity,
        "completeness": completeness,
        "v_measure": 2 * homogeneity * completeness / total if total > 0 else 0.0,
    }


def level_v_measure(codes: np.ndarray, labels: list[str]) -> list[dict]:
    """SID quality per level (UniSID 4.1): the V-measure of the items grouped by their code prefix up to each
    level (the groups a model generating level by level has narrowed to) against their class labels."""
    classes = np.asarray(labels)
    return [{"level": level, **v_measure(classes, codes[:, : level + 1])} for level in range(codes.shape[1])]
