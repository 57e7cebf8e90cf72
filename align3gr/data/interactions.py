"""Compact, streaming-friendly storage of raw interactions while a builder reads its source.

Builders call `InteractionLog.add` once per raw row; IDs are interned to integers and columns kept
in typed arrays, and review text goes to a temporary spool file on disk, so memory grows with the
number of interactions (a few dozen bytes each), not with the size of the raw file.
"""

from __future__ import annotations

import math
import os
import tempfile
from array import array
from collections.abc import Sequence as SequenceABC
from pathlib import Path

import numpy as np

from align3gr.errors import DataError


class TextSpool:
    """Append-only store of strings in a temporary file, addressed by index and read back with positioned
    reads (not a memory map, whose touched pages would count as resident memory)."""

    def __init__(self) -> None:
        handle, self._path = tempfile.mkstemp(prefix="align3gr-spool-", suffix=".txt")
        self._file = os.fdopen(handle, "w+b")
        self._offsets = array("q", [0])
        self._flushed = True

    def append(self, text: str) -> int:
        data = text.encode("utf-8")
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        self._flushed = False
        return len(self._offsets) - 2

    def get(self, index: int) -> str:
        if not self._flushed:
            self._file.flush()
            self._flushed = True
        start = self._offsets[index]
        return os.pread(self._file.fileno(), self._offsets[index + 1] - start, start).decode("utf-8")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            Path(self._path).unlink(missing_ok=True)

    def __del__(self) -> None:
        self.close()


class SpooledTexts(SequenceABC[str]):
    """A read-only list of strings that stay in a TextSpool on disk until accessed (review text)."""

    def __init__(self, spool: TextSpool, indices: np.ndarray) -> None:
        self._spool = spool
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._spool.get(int(i)) for i in self._indices[index]]
        return self._spool.get(int(self._indices[index]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SequenceABC) and list(self) == list(other)


class InteractionLog:
    """Interactions as columns: user, item, timestamp, rating, review index and source line."""

    def __init__(self, source: str | Path, with_reviews: bool = False) -> None:
        self.source = Path(source)
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self._users = array("q")
        self._items = array("q")
        self._timestamps = array("q")
        self._ratings = array("d")
        self._lines = array("q")
        self.reviews = TextSpool() if with_reviews else None

    def __len__(self) -> int:
        return len(self._users)

    def _intern(self, value: str, index: dict[str, int], names: list[str]) -> int:
        code = index.get(value)
        if code is None:
            code = index[value] = len(names)
            names.append(value)
        return code

    def add(
        self,
        user_id: str,
        item_id: str,
        timestamp: object,
        rating: object = None,
        review: str | None = None,
        line: int = 0,
    ) -> None:
        """Record one interaction; `timestamp` and `rating` are checked to be numbers (rating may be None)."""
        if not user_id or not item_id:
            raise DataError("empty user or item ID", self.source, line)
        self._users.append(self._intern(str(user_id), self._user_index, self.user_ids))
        self._items.append(self._intern(str(item_id), self._item_index, self.item_ids))
        self._timestamps.append(parse_timestamp(timestamp, self.source, line))
        self._ratings.append(math.nan if rating is None else parse_rating(rating, self.source, line))
        self._lines.append(line)
        if self.reviews is not None:
            self.reviews.append(review or "")

    def columns(self) -> dict[str, np.ndarray]:
        """The columns as numpy arrays (`rating` is NaN where the source had none)."""
        return {
            "user": np.frombuffer(self._users, dtype=np.int64).copy(),
            "item": np.frombuffer(self._items, dtype=np.int64).copy(),
            "timestamp": np.frombuffer(self._timestamps, dtype=np.int64).copy(),
            "rating": np.frombuffer(self._ratings, dtype=np.float64).copy(),
            "line": np.frombuffer(self._lines, dtype=np.int64).copy(),
        }

    def has_ratings(self) -> bool:
        return bool(len(self)) and not np.isnan(np.frombuffer(self._ratings, dtype=np.float64)).all()


def parse_timestamp(value: object, path: Path, line: int) -> int:
    """A finite number (or numeric string) as integer seconds."""
    number = _number(value, "timestamp", path, line)
    return int(number)


def parse_rating(value: object, path: Path, line: int) -> float:
    """A finite number (or numeric string) as a float rating."""
    return _number(value, "rating", path, line)


def _number(value: object, name: str, path: Path, line: int) -> float:
    if isinstance(value, bool):
        raise DataError(f"{name} must be a number, got {value!r}", path, line)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {value!r}", path, line) from None
    if not math.isfinite(number):
        raise DataError(f"{name} must be a finite number, got {value!r}", path, line)
    return number
