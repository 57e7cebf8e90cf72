"""Rows of integers held as one flat array and the rows' lengths, built with numpy gathers: the SFT rows' token IDs
and masks without a Python list per row or per token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Row k is `values[starts[k] : starts[k] + lengths[k]]`; the rows are stored back to back. `values` is 1-D, or
    2-D with one entry per row element along the first axis (a token's ID and mask)."""

    values: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> Ragged:
        """The rows of Python lists of integers."""
        lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
        return cls(np.fromiter(chain.from_iterable(rows), np.int64, count=int(lengths.sum())), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def starts(self) -> np.ndarray:
        """Where each row starts in `values`."""
        return np.cumsum(self.lengths) - self.lengths

    def tolist(self) -> list[list]:
        """Every row as a Python list."""
        return [row.tolist() for row in np.split(self.values, np.cumsum(self.lengths)[:-1])] if len(self) else []

    def take(self, rows: np.ndarray) -> Ragged:
        """The rows at the positions `rows` (indices or a boolean mask), in that order."""
        lengths = self.lengths[rows]
        return Ragged(self.values[spans(self.starts()[rows], lengths)], lengths)

    def with_each(self, value: int, at_start: bool) -> Ragged:
        """Every row of a 1-D `values` with `value` added at its start (`at_start`) or at its end."""
        ends = np.cumsum(self.lengths)
        return Ragged(np.insert(self.values, ends - self.lengths if at_start else ends, value), self.lengths + 1)

    def paired(self, column: Ragged | int) -> Ragged:
        """Rows of (value, column value) pairs: a 1-D `values` with a second column, from `column`'s values (same
        lengths) or constant."""
        second = np.full(len(self.values), column) if isinstance(column, int) else column.values
        return Ragged(np.column_stack([self.values, second]), self.lengths)


def spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions `starts[k], ..., starts[k] + lengths[k] - 1` for each k, concatenated."""
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(len(shift), dtype=shift.dtype)


def stacked(parts: Sequence[Ragged]) -> Ragged:
    """The rows of every part, part after part."""
    return Ragged(np.concatenate([p.values for p in parts]), np.concatenate([p.lengths for p in parts]))


def joined(parts: Sequence[Ragged]) -> Ragged:
    """Row k is row k of every part (all of the same row count), joined end to end."""
    whole = stacked(parts)
    order = np.arange(len(whole)).reshape(len(parts), -1).T.ravel()
    return Ragged(whole.take(order).values, sum(p.lengths for p in parts))


class Growing:
    """A 1-D int64 array appended to in amortised constant time per element (the capacity doubles when full), so
    a table that grows batch by batch is not copied whole at each batch."""

    def __init__(self) -> None:
        self.data, self.size = np.zeros(1024, np.int64), 0

    def extend(self, values: np.ndarray) -> None:
        """Append `values`."""
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.zeros(max(end, 2 * len(self.data)), np.int64)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self) -> np.ndarray:
        """The values appended so far (a view, valid until the next `extend`)."""
        return self.data[: self.size]
