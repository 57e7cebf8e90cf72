"""The bucket fast paths against straightforward references, on small catalogues with shared prefixes, tied
similarities, repeated codes and exclusions: similarity buckets give the same buckets and seeded fills; prefix fills
draw distinct members of the bucket, as many as it has, and self-play rows match the reference's but for which
catalogue items fill them; sampled similarity edges approximate the exact ones."""

from __future__ import annotations

import random

import pytest
import torch

from align3gr.dpo.buckets import BUCKETS, BucketRule, PrefixBuckets, SimilarityBuckets, prefix_match
from align3gr.dpo.preferences import self_play_examples
from align3gr.errors import ConfigError


class ReferencePrefixBuckets(PrefixBuckets):
    """Prefix buckets whose fill filters the whole prefix group, then samples it."""

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        low, high = self.rule.bounds(bucket)
        if count <= 0 or low == 0:
            return super().fill(target, bucket, count, exclude, rng)
        code = self.codes[target]
        pool = [
            item
            for item in self.by_prefix.get(code[:low], ())
            if item != target and item not in exclude and low <= prefix_match(self.codes[item], code) < high
        ]
        return rng.sample(pool, min(count, len(pool)))


class ReferenceSimilarityBuckets(SimilarityBuckets):
    """Similarity buckets that sort the catalogue per target and look candidates up in the ranked list."""

    def ranked(self, target: str) -> list[str]:
        position = self.index[target]
        similarity = self.vectors @ self.vectors[position]
        similarity[position] = float("-inf")
        return [self.items[k] for k in torch.sort(similarity, descending=True, stable=True).indices[:-1].tolist()]

    def bucket(self, candidate: str, target: str) -> str | None:
        if candidate == target:
            return None
        rank = self.ranked(target).index(candidate)
        return next(b for b in ("hard", "medium", "easy") if self.edges[b][0] <= rank < self.edges[b][1])

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        if count <= 0:
            return []
        low, high = self.edges[bucket]
        pool = [item for item in self.ranked(target)[low:high] if item not in exclude]
        return rng.sample(pool, min(count, len(pool)))


def catalogue(seed: int, size: int) -> dict[str, list[str]]:
    """Items (names out of code order) with codes from few values, so prefixes are shared and some codes repeat."""
    rng = random.Random(seed)
    return {f"i{rng.randrange(10**6)}_{k}": [f"<{c}_{rng.randrange(3)}>" for c in "abc"] for k in range(size)}


def assert_same_draws(fast, reference, items: list[str], seed: int) -> None:
    rng = random.Random(seed)
    for target in rng.sample(items, 12):
        assert [fast.bucket(c, target) for c in items] == [reference.bucket(c, target) for c in items]
        for bucket in (*BUCKETS, None):
            for count in (0, 1, 3, 40):
                exclude = set(rng.sample(items, rng.randrange(6))) | {"not-an-item"}
                draw = rng.randrange(10**6)
                expected = reference.fill(target, bucket, count, exclude, random.Random(draw))
                assert fast.fill(target, bucket, count, exclude, random.Random(draw)) == expected


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thresholds", [(1, 2), (1, 1), (2, 2)])
def test_prefix_fill_draws_distinct_members_of_the_bucket_as_many_as_there_are(seed, thresholds):
    codes = catalogue(seed, 90)
    rule = BucketRule(3, *thresholds)
    fast = PrefixBuckets(codes, rule)
    rng = random.Random(seed)
    for target in rng.sample(list(codes), 12):
        for bucket in (*BUCKETS, None):
            for count in (0, 1, 3, 40):  # 40: more than most buckets hold, so the counting path fills the rest
                exclude = set(rng.sample(list(codes), rng.randrange(6))) | {"not-an-item"}
                low, high = rule.bounds(bucket)
                members = {
                    item for item, code in codes.items()
                    if item != target and item not in exclude and low <= prefix_match(code, codes[target]) < high
                }  # fmt: skip
                draw = rng.randrange(10**6)
                drawn = fast.fill(target, bucket, count, exclude, random.Random(draw))
                assert drawn == fast.fill(target, bucket, count, exclude, random.Random(draw))  # seeded
                assert len(set(drawn)) == len(drawn) and set(drawn) <= members
                if low > 0:  # a short draw is completed by counting: every member can be found
                    assert len(drawn) == min(count, len(members))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shares", [(0.1, 0.05), (0.3, 0.2), (0.01, 0.01)])
def test_similarity_buckets_equal_the_sorted_catalogue(seed, shares):
    generator = torch.Generator().manual_seed(seed)
    items = [f"i{k}" for k in range(70)]
    vectors = torch.randint(-2, 3, (70, 3), generator=generator).float()  # few distinct directions: many ties
    vectors[5] = 0.0
    fast, reference = (cls(items, vectors, *shares) for cls in (SimilarityBuckets, ReferenceSimilarityBuckets))
    assert_same_draws(fast, reference, items, seed)


@pytest.mark.parametrize("kind", [*BUCKETS, "mixed", "random"])
def test_self_play_rows_with_the_fast_buckets_match_the_references(kind):
    codes = catalogue(7, 120)
    items = list(codes)
    rng = random.Random(1)
    prompts = [(f"u{k}", (), rng.choice(items)) for k in range(30)]
    generated = [rng.sample(items, 10) for _ in prompts]
    positives = {f"u{k}": set(rng.sample(items, 3)) for k in range(30)}
    vectors = torch.randint(-2, 3, (120, 4), generator=torch.Generator().manual_seed(1)).float()
    similarity = SimilarityBuckets(items, vectors, 0.1, 0.05), ReferenceSimilarityBuckets(items, vectors, 0.1, 0.05)
    rows = self_play_examples(prompts, generated, similarity[0], kind, 6, 3, "catalogue", positives)
    assert rows == self_play_examples(prompts, generated, similarity[1], kind, 6, 3, "catalogue", positives)
    prefix = PrefixBuckets(codes, BucketRule(3))  # the same generated items; catalogue draws of the same buckets
    rows, _ = self_play_examples(prompts, generated, prefix, kind, 6, 3, "catalogue", positives)
    expected, _ = self_play_examples(prompts, generated, ReferencePrefixBuckets(codes, BucketRule(3)), kind, 6, 3,
                                     "catalogue", positives)  # fmt: skip
    assert len(rows) == len(expected)
    for row, other in zip(rows, expected, strict=True):
        assert (row.user_id, row.chosen, row.generated, row.filled) == (other.user_id, other.chosen, other.generated,
                                                                        other.filled)  # fmt: skip
        assert len(set(row.rejected)) == len(row.rejected) and row.chosen not in row.rejected
        assert not set(row.rejected) & positives[row.user_id]
        if kind in BUCKETS:
            assert {prefix.bucket(item, row.chosen) for item in row.rejected} == {kind}


def large_catalogue(size: int = 3000) -> tuple[list[str], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [f"i{k}" for k in range(size)], torch.randn(size, 8, generator=generator)


def test_a_sample_as_large_as_the_catalogue_ranks_it_whole():
    items, vectors = large_catalogue(200)
    exact = SimilarityBuckets(items, vectors, 0.1, 0.05)
    assert SimilarityBuckets(items, vectors, 0.1, 0.05, sample=199).sample == 0
    assert_same_draws(SimilarityBuckets(items, vectors, 0.1, 0.05, sample=500), exact, items, 0)


def test_sampled_edges_approximate_the_exact_buckets():
    items, vectors = large_catalogue()
    exact = SimilarityBuckets(items, vectors, 0.1, 0.05)
    sampled = SimilarityBuckets(items, vectors, 0.1, 0.05, sample=600, seed=3)
    for target in items[:5]:
        sampled_buckets = [sampled.bucket(c, target) for c in items]
        exact_buckets = [exact.bucket(c, target) for c in items]
        agree = sum(a == b for a, b in zip(sampled_buckets, exact_buckets, strict=True)) / len(items)
        assert agree > 0.97
        for bucket, share in (("hard", 0.05), ("medium", 0.1)):
            assert abs(sampled_buckets.count(bucket) / (len(items) - 1) - share) < 0.3 * share


def test_sampled_fill_draws_distinct_members_of_the_bucket_reproducibly():
    items, vectors = large_catalogue()
    made = [SimilarityBuckets(items, vectors, 0.1, 0.01, sample=1000, seed=1) for _ in range(2)]
    exclude = set(items[10:40])
    for bucket in (*BUCKETS, None):
        draws = [b.fill("i5", bucket, 12, exclude, random.Random(9)) for b in made]
        assert draws[0] == draws[1] and len(draws[0]) == len(set(draws[0])) == 12
        assert not set(draws[0]) & (exclude | {"i5"})
        assert all(made[0].bucket(item, "i5") == (bucket or made[0].bucket(item, "i5")) for item in draws[0])
    other_seed = SimilarityBuckets(items, vectors, 0.1, 0.01, sample=1000, seed=2)
    assert other_seed.boundary("i5", 30) != made[0].boundary("i5", 30)


def test_with_a_sample_the_items_most_similar_to_the_target_are_in_its_hard_band():
    """The top edge of a target's ranking is known without a sample: the catalogue items more similar than the sample's
    most similar one are hard (and in the band of no bucket), as `bucket` says, so the hard fill can draw them."""
    items, vectors = large_catalogue()
    sampled = SimilarityBuckets(items, vectors, 0.1, 0.05, sample=100, seed=0)
    catalogue = torch.arange(len(items))
    for target in items[:5]:
        top = catalogue[torch.argsort(sampled.of(target, catalogue), descending=True, stable=True)][1:6]
        assert all(sampled.bucket(items[int(k)], target) == "hard" for k in top)
        assert sampled.in_band(target, "hard", top).all() and sampled.in_band(target, None, top).all()
        bands = [sampled.in_band(target, bucket, catalogue) for bucket in BUCKETS]
        others = catalogue != sampled.index[target]
        assert torch.equal(sum(band.long() for band in bands)[others], torch.ones(len(items) - 1, dtype=torch.long))
        in_bands = {items[int(k)]: b for b, band in zip(BUCKETS, bands, strict=True) for k in band.nonzero().flatten()}
        assert all(sampled.bucket(item, target) == bucket for item, bucket in in_bands.items())


@pytest.mark.parametrize("sample", [0, 5])
def test_an_empty_hard_band_holds_no_item_by_bucket_as_by_fill(sample):
    """20 items at hard_share 0.01: the hard band is empty (0 of 19 items); `bucket` calls no item hard, with a
    sample too (whose estimated edge of rank 0 would be the sample's most similar item), as the bands say."""
    items, vectors = large_catalogue(20)
    buckets = SimilarityBuckets(items, vectors, 0.3, 0.01, sample=sample, seed=0)
    catalogue = torch.arange(len(items))
    for target in items:
        bands = {bucket: buckets.in_band(target, bucket, catalogue) for bucket in BUCKETS}
        assert not bands["hard"].any()
        for k, item in enumerate(items):
            if item != target:
                assert bands[buckets.bucket(item, target)][k], (target, item)


def test_a_negative_sample_is_refused():
    items, vectors = large_catalogue(20)
    with pytest.raises(ConfigError, match="sample >= 0"):
        SimilarityBuckets(items, vectors, 0.1, 0.05, sample=-1)
