"""Preference data of the progressive stages: prefix-ngram buckets, self-play rows, real-feedback rows."""

from __future__ import annotations

import random

import pytest
import torch

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.dpo.buckets import BucketRule, PrefixBuckets, SimilarityBuckets, prefix_match
from align3gr.dpo.preferences import real_feedback_examples, self_play_examples
from align3gr.errors import ConfigError

# Items named by their codes: "x12" is <a_1><b_2><c_x>; the target T is <a_1><b_2><c_0>.
CODES = {"T": ["<a_1>", "<b_2>", "<c_0>"]}
CODES |= {f"h{k}": ["<a_1>", "<b_2>", f"<c_{k}>"] for k in range(1, 4)}  # share 2 codes: hard
CODES |= {f"m{k}": ["<a_1>", f"<b_{k + 3}>", "<c_0>"] for k in range(5)}  # share 1 code: medium
CODES |= {f"e{k}": [f"<a_{k + 2}>", "<b_2>", "<c_0>"] for k in range(40)}  # share none: easy


def test_prefix_match_and_buckets():
    assert prefix_match(CODES["T"], CODES["h1"]) == 2
    assert prefix_match(CODES["T"], CODES["m0"]) == 1
    assert prefix_match(CODES["T"], CODES["e0"]) == 0
    rule = BucketRule(levels=3)
    assert [rule.of(CODES[i], CODES["T"]) for i in ("e0", "m0", "h1", "T")] == ["easy", "medium", "hard", None]
    four = BucketRule(levels=4, medium_min=1, hard_min=3)
    target = ["<a_1>", "<b_1>", "<c_1>", "<d_1>"]
    shared = [
        ["<a_1>", "<b_1>", "<c_1>", "<d_2>"],
        ["<a_1>", "<b_1>", "<c_2>", "<d_1>"],
        ["<a_2>", "<b_1>", "<c_1>", "<d_1>"],
    ]
    assert [four.of(c, target) for c in shared] == ["hard", "medium", "easy"]
    for bad in ({"medium_min": 0}, {"medium_min": 2, "hard_min": 1}, {"hard_min": 3}):
        with pytest.raises(ConfigError, match="0 < medium_min <= hard_min < levels"):
            BucketRule(levels=3, **bad)


@pytest.mark.parametrize("kind", ["easy", "medium", "hard"])
def test_self_play_rows_keep_the_generated_items_of_their_bucket_first(kind):
    rule = BucketRule(levels=3)
    generated = ["T", "e3", "m1", "h2", "e5", "m4", "h3"]  # beam order, the target among them
    examples, stats = self_play_examples([("u", ("e9",), "T")], [generated], PrefixBuckets(CODES, rule), kind, 4, 0)
    (row,) = examples
    expected = [g for g in generated if g != "T" and rule.of(CODES[g], CODES["T"]) == kind]
    assert row.rejected[:2] == expected and row.generated == 2
    assert "T" not in row.rejected and len(set(row.rejected)) == len(row.rejected)
    assert all(rule.of(CODES[r], CODES["T"]) == kind for r in row.rejected)
    if kind == "hard":  # only h1..h3 share two codes: the row is short rather than easier
        assert sorted(row.rejected) == ["h1", "h2", "h3"] and stats.short_rows == 1
    else:
        assert len(row.rejected) == 4 and stats.filled == 2


def test_random_and_mixed_self_play_stages():
    rule = BucketRule(levels=3)
    generated = ["T", "e3", "m1", "h2", "e5", "m4"]
    (random_row,), _ = self_play_examples([("u", (), "T")], [generated], PrefixBuckets(CODES, rule), "random", 3, 1)
    assert set(random_row.rejected) < set(generated) - {"T"} and random_row.generated == 3
    (mixed,), _ = self_play_examples([("u", (), "T")], [generated], PrefixBuckets(CODES, rule), "mixed", 6, 1)
    buckets = [rule.of(CODES[r], CODES["T"]) for r in mixed.rejected]
    assert buckets.count("easy") == buckets.count("medium") == buckets.count("hard") == 2
    assert "T" not in mixed.rejected
    with pytest.raises(ConfigError, match="unknown self-play stage kind 'extreme'"):
        self_play_examples([("u", (), "T")], [generated], PrefixBuckets(CODES, rule), "extreme", 3, 1)


def test_self_play_is_deterministic_and_never_rejects_the_chosen():
    rule = BucketRule(levels=3)
    prompts = [(f"u{k}", (), item) for k, item in enumerate(sorted(CODES))]
    generated = [sorted(CODES)[:25] for _ in prompts]
    first = self_play_examples(prompts, generated, PrefixBuckets(CODES, rule), "easy", 20, 3)[0]
    second = self_play_examples(prompts, generated, PrefixBuckets(CODES, rule), "easy", 20, 3)[0]
    assert first == second
    assert all(row.chosen not in row.rejected for row in first)


def test_prefix_fill_draws_only_from_the_bucket():
    buckets = PrefixBuckets(CODES, BucketRule(levels=3))
    assert buckets.fill("T", "easy", 0, set(), random.Random(0)) == []
    drawn = buckets.fill("T", "easy", 10, {"e0"}, random.Random(0))
    assert len(drawn) == 10 and all(d.startswith("e") and d != "e0" for d in drawn)
    assert sorted(buckets.fill("T", "medium", 10, set(), random.Random(0))) == [f"m{k}" for k in range(5)]
    assert "T" not in buckets.fill("T", None, 60, set(), random.Random(0))


def test_similarity_buckets_rank_the_catalogue_by_scid_vectors():
    items = ["T", "near", "close", *[f"far{k}" for k in range(17)]]
    vectors = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.8, 0.6], *[[-1.0, 0.1 * k] for k in range(17)]])
    buckets = SimilarityBuckets(items, vectors, medium_share=0.06, hard_share=0.06)  # 19 others: 1 hard, 1 medium
    assert [buckets.bucket(i, "T") for i in ("near", "close", "far3", "T")] == ["hard", "medium", "easy", None]
    assert buckets.fill("T", "hard", 5, set(), random.Random(0)) == ["near"]
    assert set(buckets.fill("T", "easy", 50, {"far0"}, random.Random(0))) == {f"far{k}" for k in range(1, 17)}
    rows, _ = self_play_examples([("u", (), "T")], [["T", "far2", "near", "close"]], buckets, "hard", 3, 0)
    assert rows[0].rejected == ["near"] and rows[0].generated == 1
    with pytest.raises(ConfigError, match="hard_share \\+ medium_share < 1"):
        SimilarityBuckets(items, vectors, medium_share=0.5, hard_share=0.5)


def feedback_dataset() -> Dataset:
    items = {f"i{k}": Item(f"i{k}", f"Title {k}") for k in range(8)}
    levels = ["liked", "disliked", "liked", "neutral", "liked", "disliked", "liked", "disliked"]
    sequences = {
        "u1": Sequence("u1", [f"i{k}" for k in range(8)], list(range(8)), [5.0] * 8, None, levels),
        "u2": Sequence("u2", ["i0", "i1", "i2", "i3"], [0, 1, 2, 3], None, None, ["liked"] * 4),
    }
    return Dataset(items=items, users={u: User(u) for u in sequences}, sequences=sequences)


def test_real_feedback_rows_come_from_the_train_split():
    dataset = feedback_dataset()
    easy, stats = real_feedback_examples(dataset, "disliked", num_rejected=20, prompts_per_user=3)
    # u1's train part is i0..i5 (i6 valid, i7 test): liked i2, i4 (i0 has no history); disliked i1, i5
    assert [(row.chosen, row.history) for row in easy] == [("i4", ("i0", "i1", "i2", "i3")), ("i2", ("i0", "i1"))]
    assert all(row.rejected == ["i5", "i1"] for row in easy)
    assert stats.dropped == 1  # u2 liked everything: no disliked item to reject
    (hard,), _ = real_feedback_examples(dataset, "neutral", num_rejected=20, prompts_per_user=1)
    assert hard.chosen == "i4" and hard.rejected == ["i3"]
    assert all("i7" not in row.rejected and "i6" not in row.rejected for row in easy)


def test_real_feedback_needs_feedback_levels():
    dataset = feedback_dataset()
    for seq in dataset.sequences.values():
        seq.feedback = None
    with pytest.raises(ConfigError, match="RF-DPO needs feedback levels"):
        real_feedback_examples(dataset, "disliked", 20, 1)
    with pytest.raises(ConfigError, match="unknown feedback stage kind"):
        real_feedback_examples(dataset, "angry", 20, 1)
