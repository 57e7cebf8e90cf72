"""Difficulty buckets of SP-DPO (Align3GR, "Progressive SP-DPO"): how hard a candidate is to tell from the target.

`PrefixBuckets`, the paper's default, uses the prefix-ngram match that Align3GR cites from "Enhancing Embedding
Representation Stability in Recommendation Systems with Semantic ID" (Zheng et al. 2025): the number of leading codes
a candidate's SCID shares with the ground truth. Sharing none is easy; the longer the shared prefix, the harder;
equal to the target is never a negative. With L levels and thresholds `medium_min` <= `hard_min`:

    easy    match <  medium_min
    medium  medium_min <= match < hard_min
    hard    hard_min <= match < L

The defaults (1, 2) give the paper's three stages for 3 levels (0 / 1 / 2 shared codes) and, for 4 levels, put
2 or 3 shared codes in the hard stage; set them to (1, 3) for 0 / 1-2 / 3.

`SimilarityBuckets` is the paper's softer variant: the catalogue ranked by the cosine similarity of SCID vectors to
the target's; the most similar `hard_share` of it is hard, the next `medium_share` medium, the rest easy.

Both answer `bucket(candidate, target)` and draw catalogue items of a bucket with `fill`, which tops up a stage
whose generated candidates are short of a bucket.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from align3gr.dpo.checks import check_prefix_thresholds, check_similarity_shares
from align3gr.errors import ConfigError

BUCKETS = ("easy", "medium", "hard")
FILL_ROUNDS = 4
DRAWS_PER_ITEM = 20
"""Random draws per wanted item before a prefix fill counts the bucket's members instead."""


class Buckets(Protocol):
    def bucket(self, candidate: str, target: str) -> str | None:
        """The bucket of item `candidate` for ground truth `target`; None when it is the target."""

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        """Up to `count` distinct random catalogue items of `bucket` (None: any), never the target or `exclude`."""


def prefix_match(a: Sequence[str], b: Sequence[str]) -> int:
    """The number of leading codes `a` and `b` share."""
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared


@dataclass(frozen=True)
class BucketRule:
    """The thresholds of the easy / medium / hard stages for SCIDs of `levels` codes."""

    levels: int
    medium_min: int = 1
    hard_min: int = 2

    def __post_init__(self) -> None:
        check_prefix_thresholds(self.medium_min, self.hard_min, self.levels)

    def bounds(self, bucket: str | None) -> tuple[int, int]:
        """The match range [low, high) of `bucket` (None: every candidate that is not the target)."""
        ranges = {
            None: (0, self.levels),
            "easy": (0, self.medium_min),
            "medium": (self.medium_min, self.hard_min),
            "hard": (self.hard_min, self.levels),
        }
        if bucket not in ranges:
            raise ConfigError(f"unknown SP-DPO bucket {bucket!r}; expected one of {', '.join(BUCKETS)}")
        return ranges[bucket]

    def of(self, candidate: Sequence[str], target: Sequence[str]) -> str | None:
        """The bucket of `candidate` against `target`, or None when they are the same SCID."""
        return self.by_match[min(prefix_match(candidate, target), self.levels)]

    @functools.cached_property
    def by_match(self) -> tuple[str | None, ...]:
        """The bucket of each number of shared leading codes, 0 to `levels` (the same SCID: None)."""
        return (
            *(next(b for b in BUCKETS if self.bounds(b)[0] <= m < self.bounds(b)[1]) for m in range(self.levels)),
            None,
        )


class PrefixBuckets:
    """Prefix-ngram buckets over a code table. A fill draws from the bucket's prefix group (the catalogue for easy)
    and keeps the draws that fit; a bucket still short after `DRAWS_PER_ITEM` draws per item wanted is a small part
    of its group, whose members are then counted out, so a catalogue of millions is never scanned per row."""

    def __init__(self, item_codes: Mapping[str, Sequence[str]], rule: BucketRule) -> None:
        self.rule = rule
        self.codes = {item: tuple(codes) for item, codes in item_codes.items()}
        self.items = sorted(self.codes)
        self.by_prefix: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for item in self.items:
            for depth in range(1, len(self.codes[item])):
                self.by_prefix[self.codes[item][:depth]].append(item)

    def bucket(self, candidate: str, target: str) -> str | None:
        return self.rule.of(self.codes[candidate], self.codes[target])

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        if count <= 0:
            return []
        low, high = self.rule.bounds(bucket)
        code = self.codes[target]

        def fits(item: str) -> bool:
            return item != target and item not in exclude and low <= prefix_match(self.codes[item], code) < high

        pool = self.by_prefix.get(code[:low], []) if low > 0 else self.items
        chosen: list[str] = []
        for _ in range(DRAWS_PER_ITEM * count + 100 if pool else 0):  # most of a bucket's group fits: draw, check
            item = pool[rng.randrange(len(pool))]
            if fits(item) and item not in chosen:
                chosen.append(item)
                if len(chosen) == count:
                    return chosen
        if low == 0:
            return chosen
        return chosen + self._fill_exactly(pool, code, low, high, count - len(chosen), {target, *exclude, *chosen}, rng)

    def _fill_exactly(
        self,
        pool: Sequence[str],
        code: tuple[str, ...],
        low: int,
        high: int,
        count: int,
        unfit_items: set[str],
        rng: random.Random,
    ) -> list[str]:
        """Up to `count` random members of `pool`, the `low`-code prefix group, that share fewer than `high` codes
        and are not in `unfit_items`, found without draws that miss: for a bucket that is a small part of its group."""
        if high < len(code):  # every item under the target's `high`-code prefix shares at least `high` codes
            unfit = set(self.by_prefix.get(code[:high], ()))
        else:  # the top of the hard bucket: only an item with the target's whole SCID is nearer
            unfit = {item for item in self.by_prefix.get(code[:-1], ()) if self.codes[item] == code}
        unfit.update(i for i in unfit_items if i in self.codes and prefix_match(self.codes[i], code) >= low)
        gaps = sorted(bisect.bisect_left(pool, i) for i in unfit)
        picks = rng.sample(range(len(pool) - len(gaps)), min(count, len(pool) - len(gaps)))
        return [pool[skip_gaps(pick, gaps)] for pick in picks]


def skip_gaps(position: int, gaps: Sequence[int]) -> int:
    """The index of element `position` of a list once the sorted indices `gaps` are taken out of it."""
    for gap in gaps:
        if gap > position:
            break
        position += 1
    return position


class SimilarityBuckets:
    """Buckets by the cosine similarity of SCID vectors [N, d] (one row per item of `items`): per target, the
    other items ranked most similar first (ties by catalogue order); rank share < `hard_share` is hard, <
    `hard_share + medium_share` medium. A rank is a count of the items ranked before, never a sort of the catalogue,
    and only the last target's similarities are kept (memory O(N)).

    Ranking the whole catalogue per target costs O(N) a row, so O(N^2) a stage. With `sample` > 0 and a catalogue
    larger than it, the rank edges are estimated from `sample` reference items drawn once (seeded by `seed`), and
    catalogue items are classified against the estimated edges: O(sample) a row, whatever N."""

    def __init__(
        self,
        items: Sequence[str],
        vectors: torch.Tensor,
        medium_share: float,
        hard_share: float,
        sample: int = 0,
        seed: int = 0,
    ) -> None:
        check_similarity_shares(medium_share, hard_share)
        if sample < 0:
            raise ConfigError(f"similarity buckets need sample >= 0 (0: the whole catalogue); got {sample}")
        self.items = list(items)
        self.index = {item: k for k, item in enumerate(self.items)}
        self.vectors = torch.nn.functional.normalize(vectors.detach().float(), dim=-1)
        others = len(self.items) - 1
        hard, medium = int(hard_share * others), int((hard_share + medium_share) * others)
        self.edges = {"hard": (0, hard), "medium": (hard, medium), "easy": (medium, others), None: (0, others)}
        self.sample = sample if 0 < sample < others else 0
        if self.sample:
            draw = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(seed))[: self.sample]
            self.reference = torch.sort(draw).values
            self._reference_vectors = self.vectors[self.reference]
        else:
            self.reference, self._reference_vectors = torch.arange(len(self.items)), self.vectors
        self._target: str | None = None
        self._similarity = torch.empty(0)
        self._values = self._similarity.numpy()
        self._ranked = 0
        self._boundaries: dict[int, tuple[float, int]] = {}

    def similarity(self, target: str) -> torch.Tensor:
        """Cosine similarity to `target` of each reference item (the whole catalogue, or the sample), -inf for the
        target itself (ranked last)."""
        if target != self._target:
            position = self.index[target]
            if self.sample:  # the same arithmetic as `of` (a matrix product's rounding depends on its row count)
                similarity = (self._reference_vectors * self.vectors[position]).sum(-1)
            else:
                similarity = self._reference_vectors @ self.vectors[position]
            slot = int(torch.searchsorted(self.reference, position))
            own = slot < len(self.reference) and int(self.reference[slot]) == position
            if own:
                similarity[slot] = float("-inf")
            self._target, self._similarity, self._boundaries = target, similarity, {}
            self._values = similarity.numpy()
            self._ranked = len(self.reference) - own
        return self._similarity

    def boundary(self, target: str, rank: int) -> tuple[float, int]:
        """The ranking key (-similarity, catalogue index) of the item at `rank` of `target`'s list (with a sample,
        the sample's item at the same share of its list): an item ranks before it when its key is smaller. Past
        the last item: (inf, N)."""
        similarity = self.similarity(target)
        if rank not in self._boundaries:
            place = rank * self._ranked // (len(self.items) - 1)
            if place >= self._ranked:
                self._boundaries[rank] = (float("inf"), len(self.items))
            else:
                value = similarity.kthvalue(len(similarity) - place).values
                ties = (similarity == value).nonzero().flatten()
                index = self.reference[ties[place - int((similarity > value).sum())]]
                self._boundaries[rank] = (-float(value), int(index))
        return self._boundaries[rank]

    def ahead(self, target: str, rank: int, similarity: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Whether each item (catalogue `indices`, their `similarity` to `target`) ranks before position `rank` of
        `target`'s list; the target itself never does, nor anything before rank 0 (with a sample, the estimated edge
        of rank 0 would be the sample's most similar item, and cut the catalogue's more similar ones out of every
        band)."""
        if rank == 0:
            return torch.zeros(len(indices), dtype=torch.bool)
        key, index = self.boundary(target, rank)
        ahead = (similarity > -key) | ((similarity == -key) & (indices < index))
        return ahead & (indices != self.index[target])

    def bucket(self, candidate: str, target: str) -> str | None:
        if candidate == target:
            return None
        self.similarity(target)
        position = self.index[candidate]
        value = self.of(target, torch.tensor([position]))[0] if self.sample else self._values[position]
        key = (-float(value), position)

        def before(rank: int) -> bool:  # as `ahead`: nothing ranks before rank 0 (an empty band)
            return rank > 0 and key < self.boundary(target, rank)

        if before(self.edges["hard"][1]):
            return "hard"
        return "medium" if before(self.edges["medium"][1]) else "easy"

    def of(self, target: str, indices: torch.Tensor) -> torch.Tensor:
        """Similarity to `target` of the catalogue items `indices`: read from the ranked catalogue when there is no
        sample, so an item compares with the edges through the very values they were taken from; with one, computed
        row by row as the sample's were (an elementwise product summed per row, the same bits for any row count)."""
        similarity = self.similarity(target)
        if self.sample:
            return (self.vectors[indices] * self.vectors[self.index[target]]).sum(-1)
        return similarity[indices]

    def in_band(self, target: str, bucket: str | None, indices: torch.Tensor) -> torch.Tensor:
        """Whether each catalogue item of `indices` falls in `bucket` of `target`."""
        similarity = self.of(target, indices)
        low, high = self.edges[bucket]
        return self.ahead(target, high, similarity, indices) & ~self.ahead(target, low, similarity, indices)

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        if count <= 0:
            return []
        self.similarity(target)
        if self.sample:
            return self._fill_sampled(target, bucket, count, exclude, rng)
        catalogue = torch.arange(len(self.items))
        band = self.in_band(target, bucket, catalogue)
        band[torch.tensor([self.index[item] for item in exclude if item in self.index], dtype=torch.long)] = False
        members = band.nonzero().flatten()
        order = members[torch.sort(self.similarity(target)[members], descending=True, stable=True).indices]
        picks = rng.sample(range(len(order)), min(count, len(order)))
        return [self.items[int(order[pick])] for pick in picks]

    def _fill_sampled(
        self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random
    ) -> list[str]:
        """Up to `count` items of `bucket` drawn at random from the catalogue and kept when they fall in the band
        (a few rounds of draws sized by the band's share; a band that stays short returns fewer)."""
        low, high = self.edges[bucket]
        share = max(high - low, 1) / (len(self.items) - 1)
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        chosen: list[str] = []
        for _ in range(FILL_ROUNDS):
            draws = torch.randint(
                len(self.items), (min(len(self.items), int(2 * count / share) + 64),), generator=generator
            )
            for position in draws[self.in_band(target, bucket, draws)].tolist():
                item = self.items[position]
                if item not in exclude and item not in chosen:
                    chosen.append(item)
                    if len(chosen) == count:
                        return chosen
        return chosen


def scid_vectors(model, tokenizer, item_codes: Mapping[str, Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """(items, [N, L * d]) SCID vectors: each item's code-token rows of the model's input embeddings, concatenated,
    the space the policy itself places the codes in."""
    items = list(item_codes)
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(list(item_codes[i])) for i in items])
    with torch.no_grad():
        rows = model.get_input_embeddings().weight[ids.to(model.device)]
    return items, rows.flatten(1).cpu()
