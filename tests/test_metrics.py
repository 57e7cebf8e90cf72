"""Recall@K, NDCG@K, coverage and valid rate against hand computations on crafted predictions."""

from __future__ import annotations

import math

import pytest

from align3gr.errors import ConfigError
from align3gr.metrics import Prediction, compute_metrics, ndcg_at_k, recall_at_k, target_rank


def prediction(user: str, target: str, ranked: list[str], returned: int | None = None, valid: int | None = None):
    count = len(ranked) if returned is None else returned
    return Prediction(user, target, ranked, [0.0] * len(ranked), count, count if valid is None else valid)


def test_single_list_cases():
    ranked = ["a", "b", "c", "d", "e", "f"]
    assert target_rank(ranked, "c") == 3
    assert recall_at_k(ranked, "c", 3) == 1.0 and recall_at_k(ranked, "c", 2) == 0.0
    assert ndcg_at_k(ranked, "a", 5) == 1.0
    assert ndcg_at_k(ranked, "c", 5) == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert ndcg_at_k(ranked, "f", 5) == 0.0
    assert recall_at_k(ranked, "z", 10) == 0.0 and ndcg_at_k(ranked, "z", 10) == 0.0
    # K larger than the list: the list is all there is
    assert recall_at_k(["a", "b"], "b", 10) == 1.0 and ndcg_at_k(["a", "b"], "b", 10) == pytest.approx(1 / math.log2(3))
    # repeated items count once: the target is the 2nd distinct item
    assert target_rank(["a", "a", "b"], "b") == 2
    assert recall_at_k([], "a", 5) == 0.0


def test_metrics_over_users_by_hand():
    predictions = [
        prediction("u1", "a", ["a", "b", "c"]),  # rank 1
        prediction("u2", "c", ["b", "d", "x", "y", "z", "c"]),  # rank 6: in top 10, not top 5
        prediction("u3", "q", ["a", "b"]),  # target absent
        prediction("u4", "b", ["a", "a", "b"], returned=4, valid=3),  # tie on 'a' repeated: 'b' is 2nd distinct
        prediction("u5", "a", [], returned=2, valid=0),  # nothing valid: a miss
    ]
    metrics = compute_metrics(predictions, [5, 10], catalogue_size=20)
    assert metrics["recall@5"] == pytest.approx(2 / 5)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 5)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(7) + 1 / math.log2(3)) / 5)
    assert metrics["coverage@5"] == pytest.approx(7 / 20)  # a b c d x y z
    assert metrics["coverage@10"] == pytest.approx(7 / 20)
    assert metrics["valid_rate"] == pytest.approx((3 + 6 + 2 + 3 + 0) / (3 + 6 + 2 + 4 + 2))
    assert metrics["num_users"] == 5


def test_tied_scores_keep_the_decoder_order():
    tied = Prediction("u", "b", ["a", "b"], [-1.0, -1.0], 2, 2)
    assert compute_metrics([tied], [1, 2], 2)["recall@1"] == 0.0
    assert compute_metrics([tied], [1, 2], 2)["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_any_list_of_k_and_bad_k():
    metrics = compute_metrics([prediction("u", "c", ["a", "b", "c"])], [3, 1, 3], 3)
    assert set(metrics) == {"recall@1", "recall@3", "ndcg@1", "ndcg@3", "coverage@1", "coverage@3",
                            "valid_rate", "num_users"}  # fmt: skip
    with pytest.raises(ConfigError, match="ks .* is empty"):
        compute_metrics([], [], 3)
    with pytest.raises(ConfigError, match="positive integers"):
        compute_metrics([], [0, 5], 3)
    with pytest.raises(ConfigError, match="no users"):
        compute_metrics([], [5], 3)
