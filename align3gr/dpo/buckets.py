"""Prefix-ngram difficulty buckets of SP-DPO (seed 003, "Progressive SP-DPO"; Zheng et al. 2025).

The prefix-ngram match of a candidate SCID with the ground truth is the number of leading codes they share.
Candidates sharing no prefix are easy to tell from the target; the longer the shared prefix, the harder, and a
candidate equal to the target is never a negative. With L levels and thresholds `medium_min` <= `hard_min`:

    easy    match <  medium_min
    medium  medium_min <= match < hard_min
    hard    hard_min <= match < L

The defaults (1, 2) give the paper's three stages for 3 levels (0 / 1 / 2 shared codes) and, for 4 levels, put
2 or 3 shared codes in the hard stage; set them to (1, 3) for 0 / 1-2 / 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from align3gr.errors import ConfigError

BUCKETS = ("easy", "medium", "hard")


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

    def bounds(self, bucket: str) -> tuple[int, int]:
        """The match range [low, high) of `bucket`."""
        ranges = {
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
