"""Unique item SCIDs: items sharing a full code are separated by re-assigning the last level within their
prefix group (an exact balanced assignment: each item to a distinct free code, minimising the total distance to
the chosen codes, like LC-Rec's Sinkhorn step but exact), and by a disambiguation level only where a prefix
group has more items than codes (optional). Neither is in Align3GR, whose item SCIDs are the raw RQ-VAE codes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from align3gr.errors import ConfigError


def collision_rate(codes: np.ndarray) -> float:
    """Share of rows whose full code is also another row's: 0 means every code is unique."""
    if len(codes) == 0:
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] > 1).mean())


def resolve_collisions(
    codes: np.ndarray, last_level_distances: np.ndarray, disambiguation_level: bool = True
) -> tuple[np.ndarray, dict]:
    """Make every row of `codes` [N, L] unique.

    `last_level_distances` [N, K] holds each item's distance to every code of the last level (its residual
    before that level against the last codebook). Returns the new codes ([N, L], or [N, L + 1] when a
    disambiguation level was needed) and a report: collision rate before and after, items re-assigned,
    groups resolved, and whether a level was added. Without `disambiguation_level`, a prefix group with more items
    than codes is a ConfigError: its items cannot have unique codes of L levels.
    """
    codes = codes.copy()
    before = collision_rate(codes)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, prefix in enumerate(map(tuple, codes[:, :-1])):
        groups[prefix].append(row)
    size = last_level_distances.shape[1]
    reassigned, overflow = 0, []
    for prefix, rows in groups.items():
        last = codes[rows, -1]
        if len(np.unique(last)) == len(rows):
            continue
        if len(rows) > size:
            overflow.append(prefix)
            continue
        cost = last_level_distances[rows]
        chosen_rows, chosen_codes = linear_sum_assignment(cost)
        new_last = np.empty(len(rows), dtype=codes.dtype)
        new_last[chosen_rows] = chosen_codes
        reassigned += int((new_last != last).sum())
        codes[rows, -1] = new_last
    added_level = bool(overflow)
    if added_level and not disambiguation_level:
        largest = max(len(groups[prefix]) for prefix in overflow)
        raise ConfigError(
            f"{len(overflow)} code prefixes hold more items than the last level's {size} codes (up to {largest}): "
            "item codes cannot be unique; raise codebook_size or set disambiguation_level: true"
        )
    if added_level:
        extra = np.zeros((len(codes), 1), dtype=codes.dtype)
        _, inverse = np.unique(codes, axis=0, return_inverse=True)
        seen: dict[int, int] = defaultdict(int)
        for row, key in enumerate(inverse.ravel()):
            extra[row, 0] = seen[key]
            seen[key] += 1
        codes = np.concatenate([codes, extra], axis=1)
    report = {
        "collision_rate_before": before,
        "collision_rate_after": collision_rate(codes),
        "items_reassigned": reassigned,
        "groups_over_capacity": len(overflow),
        "disambiguation_level_added": added_level,
    }
    return codes, report
