"""Preference data of the progressive stages: prefix-ngram buckets, self-play rows, real-feedback rows."""

from __future__ import annotations

import random

import pytest
import torch

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.dpo.buckets import BucketRule, PrefixBuckets, SimilarityBuckets, prefix_match
from align3gr.dpo.preferences import (
    FeedbackPrompt,
    real_feedback_examples,
    real_feedback_prompts,
    self_play_examples,
    training_positives,
)
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
def test_catalogue_fill_keeps_the_generated_items_of_the_bucket_first(kind):
    rule = BucketRule(levels=3)
    generated = ["T", "e3", "m1", "h2", "e5", "m4", "h3"]  # beam order, the target among them
    examples, stats = self_play_examples(
        [("u", ("e9",), "T")], [generated], PrefixBuckets(CODES, rule), kind, 4, 0, fill="catalogue"
    )
    (row,) = examples
    expected = [g for g in generated if g != "T" and rule.of(CODES[g], CODES["T"]) == kind]
    assert row.rejected[:2] == expected and row.generated == 2
    assert "T" not in row.rejected and len(set(row.rejected)) == len(row.rejected)
    assert all(rule.of(CODES[r], CODES["T"]) == kind for r in row.rejected)
    if kind == "hard":  # only h1..h3 share two codes: the row is short rather than easier
        assert sorted(row.rejected) == ["h1", "h2", "h3"] and stats.short_rows == 1
    else:
        assert len(row.rejected) == 4 and stats.filled == 2


def test_self_play_rejects_only_generated_items_by_default():
    """Align3GR's SP-DPO rejects the policy's own generations: a bucket short of K leaves the row short (Eq. 3 runs
    over the row's own items), a bucket with none drops it, and no catalogue item is drawn."""
    buckets = PrefixBuckets(CODES, BucketRule(levels=3))
    generated = ["T", "e3", "m1", "h2", "e5", "m4", "h3"]
    (easy,), stats = self_play_examples([("u", (), "T")], [generated], buckets, "easy", 4, 0)
    assert (easy.rejected, easy.generated, easy.filled) == (["e3", "e5"], 2, 0)
    assert stats.as_dict() == {
        "rows": 1, "dropped_rows": 0, "rejected_per_row": 2.0, "generated_share": 1.0, "filled": 0, "short_rows": 1,
    }  # fmt: skip
    (mixed,), _ = self_play_examples([("u", (), "T")], [generated], buckets, "mixed", 9, 0)
    assert mixed.rejected == ["e3", "e5", "m1", "m4", "h2", "h3"] and mixed.filled == 0
    (drawn,), _ = self_play_examples([("u", (), "T")], [generated], buckets, "random", 10, 0)
    assert sorted(drawn.rejected) == ["e3", "e5", "h2", "h3", "m1", "m4"] and drawn.filled == 0
    rows, stats = self_play_examples([("u", (), "T")], [["T", "e3", "m1"]], buckets, "hard", 4, 0)
    assert rows == [] and stats.dropped == 1
    with pytest.raises(ConfigError, match="unknown self-play fill 'random'"):
        self_play_examples([("u", (), "T")], [generated], buckets, "easy", 4, 0, fill="random")


def test_self_play_never_rejects_the_users_positives():
    """A liked training item the policy generates, or the catalogue fill draws, is not offered as rejected."""
    buckets = PrefixBuckets(CODES, BucketRule(levels=3))
    generated = ["T", "e3", "m1", "h2", "e5", "m4", "h3"]
    liked = {"u": {"h2", "e3", *(f"e{k}" for k in range(6, 40))}}
    (hard,), _ = self_play_examples([("u", (), "T")], [generated], buckets, "hard", 4, 0, positives=liked)
    assert hard.rejected == ["h3"]
    (easy,), _ = self_play_examples(
        [("u", (), "T")], [generated], buckets, "easy", 5, 0, fill="catalogue", positives=liked
    )
    assert easy.rejected[0] == "e5" and easy.generated == 1
    assert sorted(easy.rejected[1:]) == ["e0", "e1", "e2", "e4"]  # the only easy items left


def test_training_positives_are_the_liked_training_items():
    dataset = feedback_dataset()
    assert training_positives(dataset) == {"u1": {"i0", "i2", "i4"}, "u2": {"i0", "i1"}}  # never i6: valid
    for seq in dataset.sequences.values():
        seq.feedback = None
    assert training_positives(dataset) == {"u1": {f"i{k}" for k in range(6)}, "u2": {"i0", "i1"}}


def test_random_and_mixed_self_play_stages():
    rule = BucketRule(levels=3)
    generated = ["T", "e3", "m1", "h2", "e5", "m4"]
    (random_row,), _ = self_play_examples([("u", (), "T")], [generated], PrefixBuckets(CODES, rule), "random", 3, 1)
    assert set(random_row.rejected) < set(generated) - {"T"} and random_row.generated == 3
    (mixed,), _ = self_play_examples(
        [("u", (), "T")], [generated], PrefixBuckets(CODES, rule), "mixed", 6, 1, fill="catalogue"
    )
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


def feedback_rows(dataset: Dataset, kind: str, num_rejected: int, prompts_per_user: int, generated, **options):
    prompts = real_feedback_prompts(dataset, prompts_per_user)
    return real_feedback_examples(dataset, prompts, [generated] * len(prompts), kind, num_rejected, **options)


def test_real_feedback_prompts_are_liked_training_items():
    prompts = real_feedback_prompts(feedback_dataset(), prompts_per_user=3)
    # u1's train part is i0..i5 (i6 valid, i7 test): liked i2, i4 (i0 has no history); u2's is i0, i1
    assert prompts == [
        FeedbackPrompt("u1", ("i0", "i1", "i2", "i3"), "i4", 4),
        FeedbackPrompt("u1", ("i0", "i1"), "i2", 2),
        FeedbackPrompt("u2", ("i0",), "i1", 1),
    ]


def test_real_feedback_rejects_the_policys_rated_candidates_before_the_chosen_item():
    """RF-DPO: the policy's candidates the user logged at the stage's level before the chosen position come first
    (beam order), then the other logged ones (most recent first); nothing logged after the chosen item, nothing
    unrated, never the valid or test item."""
    dataset = feedback_dataset()
    candidates = ["i7", "i1", "i5", "i4", "i3", "i6"]  # i5 is disliked, but after i4 and i2
    (late, early), stats = feedback_rows(dataset, "disliked", 20, 3, candidates)
    assert (late.chosen, late.rejected, late.generated, late.filled) == ("i4", ["i1"], 1, 0)
    assert (early.chosen, early.rejected, early.generated, early.filled) == ("i2", ["i1"], 1, 0)
    assert stats.dropped == 1  # u2 liked everything: no disliked item to reject
    (hard,), _ = feedback_rows(dataset, "neutral", 20, 1, candidates)
    assert hard.chosen == "i4" and hard.rejected == ["i3"] and hard.generated == 1
    (mixed,), _ = feedback_rows(dataset, "negative", 1, 1, candidates)
    assert mixed.rejected == ["i1"]  # the beam's first rated negative


def test_real_feedback_fills_with_logged_items_before_the_chosen_one():
    items = {f"j{k}": Item(f"j{k}", f"Title {k}") for k in range(9)}
    # j0 disliked, then liked again at position 3: its last level before the chosen j6 is liked
    order = ["j0", "j1", "j2", "j0", "j3", "j4", "j6", "j7", "j5", "j8", "j8"]
    levels = ["disliked", "disliked", "neutral", "liked", "disliked", "disliked", "liked", "disliked", "disliked",
              "disliked", "disliked"]  # fmt: skip
    seq = Sequence("u", order, list(range(len(order))), None, None, levels)
    dataset = Dataset(items=items, users={"u": User("u")}, sequences={"u": seq})
    # train: j0 j1 j2 j0 j3 j4 j6 j7 j5 (j8 valid and test); the most recent liked item with history is j6, at 6
    (row,), _ = feedback_rows(dataset, "disliked", 20, 1, ["j7", "j5", "j3", "j8", "j0"])
    assert (row.chosen, row.rejected, row.generated, row.filled) == ("j6", ["j3", "j4", "j1"], 1, 2)
    (two,), _ = feedback_rows(dataset, "disliked", 2, 1, ["j7", "j3"])
    assert two.rejected == ["j3", "j4"]
    (own,), _ = feedback_rows(dataset, "disliked", 20, 1, ["j7", "j1", "j3"], fill="none")
    assert (own.rejected, own.filled) == (["j1", "j3"], 0)
    rows, stats = feedback_rows(dataset, "disliked", 20, 1, ["j7", "j5"], fill="none")
    assert rows == [] and stats.dropped == 1
    with pytest.raises(ConfigError, match="unknown real-feedback fill 'catalogue'"):
        feedback_rows(dataset, "disliked", 20, 1, [], fill="catalogue")


def test_real_feedback_needs_feedback_levels():
    dataset = feedback_dataset()
    with pytest.raises(ConfigError, match="unknown feedback stage kind"):
        feedback_rows(dataset, "angry", 20, 1, [])
    for seq in dataset.sequences.values():
        seq.feedback = None
    with pytest.raises(ConfigError, match="RF-DPO needs feedback levels"):
        real_feedback_prompts(dataset, 1)
