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
