"""Top-K metrics on item IDs (Align3GR, "Evaluation Metrics"): Recall@K and NDCG@K, plus valid rate and coverage, and
the files of an evaluation; shared by the `evaluate` stage, the baselines and SFT's valid probe.

One held-out target per user (leave-one-out). A ranked list is the decoder's output, best first; its order is
the ranking (ties in a fixed order: beam search's and the exhaustive scorer's by position among their candidates, not
by `topk`, whose order of equal scores changes with the beam width; the baselines' by catalogue order; `generate`
keeps Transformers' order) and only an item's first occurrence
counts.
A user whose list is empty or lacks the target scores 0: every user of the split is in the average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from align3gr.errors import ConfigError
from align3gr.io import write_json, write_jsonl


@dataclass(frozen=True)
class Prediction:
    """One user's ranked items (best first) against the held-out target; `returned`/`valid` count sequences."""

    user_id: str
    target: str
    ranked: Sequence[str]
    scores: Sequence[float]
    returned: int
    valid: int


def target_rank(ranked: Sequence[str], target: str) -> int | None:
    """1-based position of `target` among the distinct items of `ranked`, None when absent."""
    seen: set[str] = set()
    for item in ranked:
        if item in seen:
            continue
        seen.add(item)
        if item == target:
            return len(seen)
    return None


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1 if the target is among the first k distinct items, else 0."""
    rank = target_rank(ranked, target)
    return float(rank is not None and rank <= k)


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1 / log2(rank + 1) if the target is at rank <= k, else 0 (the ideal DCG of one target is 1)."""
    rank = target_rank(ranked, target)
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def user_score(metric: str, ranked: Sequence[str], target: str) -> float:
    """One user's `recall@K` or `ndcg@K` (the terms `compute_metrics` averages): what paired tests compare, user by
    user, from the `predictions.jsonl` of two evaluations."""
    name, _, k = metric.partition("@")
    scorers = {"recall": recall_at_k, "ndcg": ndcg_at_k}
    if name not in scorers or not k.isdecimal() or int(k) < 1:
        raise ConfigError(f"metric {metric!r}: expected recall@K or ndcg@K with K >= 1")
    return scorers[name](ranked, target, int(k))


def check_ks(ks: Sequence[int]) -> list[int]:
    """The cut-offs, sorted and distinct; an empty list or K < 1 raises."""
    if not ks:
        raise ConfigError("ks (the K of Recall@K / NDCG@K) is empty; give at least one, e.g. [5, 10]")
    bad = [k for k in ks if not isinstance(k, int) or k < 1]
    if bad:
        raise ConfigError(f"ks must be positive integers, got {bad[0]!r}")
    return sorted(set(ks))


def compute_metrics(predictions: Iterable[Prediction], ks: Sequence[int], catalogue_size: int) -> dict[str, float]:
    """`recall@K`, `ndcg@K` (means over users), `coverage@K` (distinct items in the top K of any user over the
    catalogue size) for each K, `valid_rate` (sequences that are real items over sequences returned), `num_users`."""
    ks = check_ks(ks)
    if catalogue_size < 1:
        raise ConfigError(f"catalogue_size must be >= 1, got {catalogue_size}")
    sums = {f"{name}@{k}": 0.0 for name in ("recall", "ndcg") for k in ks}
    covered: dict[int, set[str]] = {k: set() for k in ks}
    users = returned = valid = 0
    for prediction in predictions:
        users += 1
        returned += prediction.returned
        valid += prediction.valid
        distinct = list(dict.fromkeys(prediction.ranked))
        for k in ks:
            sums[f"recall@{k}"] += recall_at_k(distinct, prediction.target, k)
            sums[f"ndcg@{k}"] += ndcg_at_k(distinct, prediction.target, k)
            covered[k].update(distinct[:k])
    if users == 0:
        raise ConfigError("no users to evaluate: the split is empty")
    metrics = {name: total / users for name, total in sums.items()}
    metrics.update({f"coverage@{k}": len(covered[k]) / catalogue_size for k in ks})
    metrics["valid_rate"] = valid / returned if returned else 0.0
    metrics["num_users"] = users
    return metrics


def ranking_metrics(metrics: Mapping[str, object], ks: Sequence[int]) -> dict[str, object]:
    """`recall@K` for each K, then `ndcg@K` for each K, of a metrics dict: the columns of the printed tables."""
    return {f"{name}@{k}": metrics[f"{name}@{k}"] for name in ("recall", "ndcg") for k in ks}


METRICS_FILE = "metrics.json"
"""The file every evaluation folder holds, a model's or a baseline's."""


def write_evaluation(folder: Path, metrics: dict, predictions: Iterable[Prediction]) -> None:
    """`metrics.json` and `predictions.jsonl` (`user_id`, `target`, `ranked`, `scores` per user) into `folder`: the
    files of every evaluation, a model's or a baseline's."""
    write_json(folder / METRICS_FILE, metrics)
    rows = ({"user_id": p.user_id, "target": p.target, "ranked": list(p.ranked), "scores": list(p.scores)}
            for p in predictions)  # fmt: skip
    write_jsonl(folder / "predictions.jsonl", rows)
