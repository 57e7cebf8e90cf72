"""The canonical filtering of raw interactions: metadata check, chronological sort, de-duplication, k-core."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from align3gr.data.interactions import InteractionLog
from align3gr.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class FilterResult:
    """Row indices into the log that survive, grouped by user and chronological within a user."""

    rows: np.ndarray
    counts: dict[str, int]
    kcore_rounds: int


def filter_interactions(
    interactions: InteractionLog,
    known_items: set[str],
    user_k: int = 5,
    item_k: int = 5,
    missing_metadata: str = "error",
) -> FilterResult:
    """Apply, in order: metadata check (error or drop), stable chronological sort per user,
    removal of a user's repeated item (first kept), then iterative k-core on users and items.
    The thresholds are checked by `DataConfig.validate`."""
    cols = interactions.columns()
    user, item = cols["user"], cols["item"]
    counts = {"raw_interactions": len(interactions)}
    if not len(interactions):
        raise DataError("no interactions found", interactions.source)

    has_metadata = np.fromiter(
        (i in known_items for i in interactions.item_ids), dtype=bool, count=len(interactions.item_ids)
    )
    keep = has_metadata[item]
    if not keep.all():
        first = int(np.flatnonzero(~keep)[0])
        if missing_metadata == "error":
            raise DataError(
                f"interaction of user '{interactions.user_ids[user[first]]}' names item "
                f"'{interactions.item_ids[item[first]]}', which has no metadata "
                f"({int((~has_metadata).sum())} such items in all)",
                interactions.source,
                int(cols["line"][first]),
            )
        log.info("dropped %d interactions with items that have no metadata", int((~keep).sum()))
    rows = np.flatnonzero(keep)
    counts["with_metadata"] = len(rows)
    if not len(rows):  # the k-core below keeps an empty selection as it is: the dataset would be published empty
        raise DataError(
            "no interaction's item has metadata, so dropping those without left the dataset empty: "
            f"{counts['raw_interactions']} raw interactions (of {len(interactions.item_ids)} items), with metadata 0. "
            "Check that the item metadata belongs to these interactions",
            interactions.source,
        )

    rows = rows[np.lexsort((rows, cols["timestamp"][rows], user[rows]))]
    pair = user[rows] * len(interactions.item_ids) + item[rows]
    _, first_seen = np.unique(pair, return_index=True)
    rows = rows[np.sort(first_seen)]
    counts["deduplicated"] = len(rows)

    rounds = 0
    before = (len(rows), len(np.unique(user[rows])), len(np.unique(item[rows])))
    while True:
        user_count = np.bincount(user[rows], minlength=len(interactions.user_ids))
        item_count = np.bincount(item[rows], minlength=len(interactions.item_ids))
        keep = (user_count[user[rows]] >= user_k) & (item_count[item[rows]] >= item_k)
        if keep.all():
            break
        rows = rows[keep]
        rounds += 1
        if not len(rows):
            raise DataError(
                f"the k-core filter (users >= {user_k}, items >= {item_k} interactions) left the dataset empty "
                f"after {rounds} rounds: before it {before[0]} interactions, {before[1]} users, {before[2]} items; "
                "after it 0. Lower user_k/item_k or use a larger source",
                interactions.source,
            )
    counts["interactions"] = len(rows)
    counts["users"] = len(np.unique(user[rows]))
    counts["items"] = len(np.unique(item[rows]))
    return FilterResult(rows=rows, counts=counts, kcore_rounds=rounds)
