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
from collections.abc import Iterator
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import IO

import numpy as np

from align3gr.errors import DataError

_INT64 = 2**63
"""Timestamps are stored as 64-bit integers."""


def anonymous_file() -> IO[bytes]:
    """A temporary file for reading and writing that has no name (`tempfile.TemporaryFile`: unlinked as soon as it is
    made, used through its open descriptor), so the system frees it when the process ends, however it ends: a killed
    build leaves nothing in the temporary folder."""
    return tempfile.TemporaryFile(prefix="align3gr-spool-", suffix=".txt")


class TextSpool:
    """Append-only store of strings in an unnamed temporary file (`anonymous_file`), addressed by index and read back
    with positioned reads (not a memory map, whose touched pages would count as resident memory)."""

    def __init__(self) -> None:
        self._file = anonymous_file()
        self._offsets = array("q", [0])
        self._flushed = True

    def append(self, text: str) -> int:
        data = text.encode("utf-8")
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        self._flushed = False
        return len(self._offsets) - 2

    def get(self, index: int) -> str:
        return self.get_range(index, index + 1)[0]

    def get_range(self, start: int, stop: int) -> list[str]:
        """The strings `start` to `stop - 1`, in one positioned read (split in memory, decoded at once when ASCII)."""
        self._flush()
        offsets = self._offsets
        base = offsets[start]
        data = os.pread(self._file.fileno(), offsets[stop] - base, base)
        bounds = zip(offsets[start:stop], offsets[start + 1 : stop + 1], strict=True)
        if data.isascii():
            text = data.decode("ascii")
            return [text[a - base : b - base] for a, b in bounds]
        return [data[a - base : b - base].decode("utf-8") for a, b in bounds]

    def reorder(self, indices: np.ndarray, chunk: int = 8192) -> None:
        """Keep only the strings at `indices`, in that order (string k is then the one that was at `indices[k]`): a
        build puts the review text in sequence order once, so each user's reviews are then read back in one
        `get_range` instead of one read each. Copied through a new file `chunk` strings at a time, the old one
        closed."""
        self._flush()
        new_file, new_offsets = anonymous_file(), array("q", [0])
        descriptor, write = self._file.fileno(), new_file.write
        offsets = np.frombuffer(self._offsets, dtype=np.int64)
        for first in range(0, len(indices), chunk):
            part = indices[first : first + chunk]
            starts, ends = offsets[part], offsets[part + 1]
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                write(os.pread(descriptor, end - start, start))
            new_offsets.frombytes((np.cumsum(ends - starts) + new_offsets[-1]).tobytes())
        self.close()
        self._file, self._offsets, self._flushed = new_file, new_offsets, False

    def _flush(self) -> None:
        if not self._flushed:
            self._file.flush()
            self._flushed = True

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        self.close()


class SpooledTexts(SequenceABC[str]):
    """A read-only list of strings that stay in a TextSpool on disk until accessed (review text): the spool's
    strings `start` to `stop - 1`."""

    def __init__(self, spool: TextSpool, start: int, stop: int) -> None:
        self._spool = spool
        self._range = range(start, stop)

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            part = self._range[index]
            if part.step != 1:
                return [self._spool.get(i) for i in part]
            return self._spool.get_range(part.start, part.stop) if part else []
        return self._spool.get(self._range[index])

    def __iter__(self) -> Iterator[str]:
        return iter(self[:])

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

    def add(
        self,
        user_id: str,
        item_id: str,
        timestamp: object,
        rating: object = None,
        review: str | None = None,
        line: int = 0,
    ) -> None:
        """Record one interaction; `timestamp` and `rating` are checked to be numbers (rating may be None).

        Called once per raw row, so the common types (an int timestamp that a float holds exactly, a finite float
        rating) are stored inline, as `parse_timestamp` / `parse_rating` would give them."""
        if not user_id or not item_id:
            raise DataError("empty user or item ID", self.source, line)
        user_id, item_id = str(user_id), str(item_id)
        code = self._user_index.get(user_id)
        if code is None:
            code = self._user_index[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
        self._users.append(code)
        code = self._item_index.get(item_id)
        if code is None:
            code = self._item_index[item_id] = len(self.item_ids)
            self.item_ids.append(item_id)
        self._items.append(code)
        if type(timestamp) is int and -_INT64 <= timestamp < _INT64:
            self._timestamps.append(timestamp)
        else:
            self._timestamps.append(parse_timestamp(timestamp, self.source, line))
        if rating is None:
            self._ratings.append(math.nan)
        elif type(rating) is float and math.isfinite(rating):
            self._ratings.append(rating)
        else:
            self._ratings.append(parse_rating(rating, self.source, line))
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


def parse_timestamp(value: object, path: Path, line: int) -> int:
    """A finite number (or numeric string) as integer seconds; an integer (or integer string) is taken exactly."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(value) if isinstance(value, str) else None  # type: ignore[arg-type]
        except ValueError:
            number = None
        if number is None:
            number = int(_number(value, "timestamp", path, line))
    if not -_INT64 <= number < _INT64:
        raise DataError(f"timestamp {value!r} is beyond the 64-bit range", path, line)
    return number


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
    except OverflowError:
        raise DataError(f"{name} must be a finite number, got an integer too large for a float", path, line) from None
    if not math.isfinite(number):
        raise DataError(f"{name} must be a finite number, got {value!r}", path, line)
    return number
