"""Difficulty buckets of SP-DPO (Align3GR, "Progressive SP-DPO"): how hard a candidate is to tell from the target.

`PrefixBuckets`, the paper's default, uses the prefix-ngram match (Zheng et al. 2025): the number of leading codes
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
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from align3gr.errors import ConfigError

BUCKETS = ("easy", "medium", "hard")


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
        if not 0 < self.medium_min <= self.hard_min < self.levels:
            raise ConfigError(
                f"SP-DPO bucket thresholds need 0 < medium_min <= hard_min < levels; got medium_min="
                f"{self.medium_min}, hard_min={self.hard_min} for {self.levels}-level SCIDs"
            )

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
        match = prefix_match(candidate, target)
        if match >= self.levels:
            return None
        return next(b for b in BUCKETS if self.bounds(b)[0] <= match < self.bounds(b)[1])


class PrefixBuckets:
    """Prefix-ngram buckets over a code table. Items sharing at least one code with a target are looked up by
    prefix; items sharing none are drawn by rejection, so a catalogue of millions is never scanned per row."""

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

        if low > 0:  # the items sharing `low` codes, in catalogue order, less those that do not fit
            pool = self.by_prefix.get(code[:low], [])
            group = self.by_prefix.get(code[: min(high, len(code) - 1)], ())
            nearer = [item for item in group if prefix_match(self.codes[item], code) >= high]
            unfit = {item for item in (target, *nearer, *exclude) if item in self.codes}
            gaps = sorted(bisect.bisect_left(pool, i) for i in unfit if prefix_match(self.codes[i], code) >= low)
            picks = rng.sample(range(len(pool) - len(gaps)), min(count, len(pool) - len(gaps)))
            return [pool[skip_gaps(pick, gaps)] for pick in picks]
        chosen: list[str] = []
        for _ in range(20 * count + 100):
            item = self.items[rng.randrange(len(self.items))]
            if fits(item) and item not in chosen:
                chosen.append(item)
                if len(chosen) == count:
                    break
        return chosen


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
    and only the last target's similarities are kept (memory O(N))."""

    def __init__(self, items: Sequence[str], vectors: torch.Tensor, medium_share: float, hard_share: float) -> None:
        if not (0 < hard_share and 0 < medium_share and hard_share + medium_share < 1):
            raise ConfigError(
                f"similarity buckets need 0 < hard_share, 0 < medium_share, hard_share + medium_share < 1; got "
                f"hard_share={hard_share}, medium_share={medium_share}"
            )
        self.items = list(items)
        self.index = {item: k for k, item in enumerate(self.items)}
        self.vectors = torch.nn.functional.normalize(vectors.detach().float(), dim=-1)
        others = len(self.items) - 1
        hard, medium = int(hard_share * others), int((hard_share + medium_share) * others)
        self.edges = {"hard": (0, hard), "medium": (hard, medium), "easy": (medium, others), None: (0, others)}
        self._target: str | None = None
        self._similarity = torch.empty(0)
        self._values = self._similarity.numpy()
        self._boundaries: dict[int, tuple[float, int]] = {}

    def similarity(self, target: str) -> torch.Tensor:
        """[N] cosine similarity of every item to `target` (-inf for the target itself, ranked last)."""
        if target != self._target:
            position = self.index[target]
            similarity = self.vectors @ self.vectors[position]
            similarity[position] = float("-inf")
            self._target, self._similarity, self._boundaries = target, similarity, {}
            self._values = similarity.numpy()
        return self._similarity

    def boundary(self, target: str, rank: int) -> tuple[float, int]:
        """The ranking key (-similarity, catalogue index) of the item at `rank` of `target`'s list: an item ranks
        before it when its key is smaller. Past the last item: (inf, N)."""
        similarity = self.similarity(target)
        if rank not in self._boundaries:
            if rank >= len(self.items) - 1:
                self._boundaries[rank] = (float("inf"), len(self.items))
            else:
                value = similarity.kthvalue(len(self.items) - rank).values
                ties = (similarity == value).nonzero().flatten()
                index = ties[rank - int((similarity > value).sum())]
                self._boundaries[rank] = (-float(value), int(index))
        return self._boundaries[rank]

    def before(self, target: str, rank: int) -> torch.Tensor:
        """[N] whether each item ranks before position `rank` of `target`'s list (the target itself never does)."""
        similarity = self.similarity(target)
        key, index = self.boundary(target, rank)
        ahead = (similarity > -key) | ((similarity == -key) & (torch.arange(len(self.items)) < index))
        ahead[self.index[target]] = False
        return ahead

    def bucket(self, candidate: str, target: str) -> str | None:
        if candidate == target:
            return None
        self.similarity(target)
        position = self.index[candidate]
        key = (-float(self._values[position]), position)
        if key < self.boundary(target, self.edges["hard"][1]):
            return "hard"
        return "medium" if key < self.boundary(target, self.edges["medium"][1]) else "easy"

    def fill(self, target: str, bucket: str | None, count: int, exclude: set[str], rng: random.Random) -> list[str]:
        if count <= 0:
            return []
        low, high = self.edges[bucket]
        band = self.before(target, high) & ~self.before(target, low)
        band[torch.tensor([self.index[item] for item in exclude if item in self.index], dtype=torch.long)] = False
        members = band.nonzero().flatten()
        order = members[torch.sort(self.similarity(target)[members], descending=True, stable=True).indices]
        picks = rng.sample(range(len(order)), min(count, len(order)))
        return [self.items[int(order[pick])] for pick in picks]


def scid_vectors(model, tokenizer, item_codes: Mapping[str, Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """(items, [N, L * d]) SCID vectors: each item's code-token rows of the model's input embeddings, concatenated,
    the space the policy itself places the codes in."""
    items = list(item_codes)
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(list(item_codes[i])) for i in items])
    with torch.no_grad():
        rows = model.get_input_embeddings().weight[ids.to(model.device)]
    return items, rows.flatten(1).cpu()
