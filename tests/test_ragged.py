"""Ragged rows: the numpy gathers give what the same operations on Python lists give."""

from __future__ import annotations

import numpy as np

from align3gr.sft.ragged import Growing, Ragged, joined, stacked

ROWS = [[3, 1], [], [4, 1, 5], [9]]
OTHER = [[2], [6, 5], [], [3, 5, 8]]


def test_rows_round_trip_and_are_taken_in_any_order():
    rows = Ragged.from_lists(ROWS)
    assert rows.tolist() == ROWS and len(rows) == 4 and rows.starts().tolist() == [0, 2, 2, 5]
    assert rows.take(np.array([2, 0, 2, 1])).tolist() == [ROWS[2], ROWS[0], ROWS[2], ROWS[1]]
    assert rows.take(np.array([True, False, False, True])).tolist() == [ROWS[0], ROWS[3]]
    assert rows.take(np.array([], np.int64)).tolist() == [] == Ragged.from_lists([]).tolist()


def test_a_value_is_added_at_every_rows_start_or_end():
    rows = Ragged.from_lists(ROWS)
    assert rows.with_each(7, at_start=True).tolist() == [[7, *row] for row in ROWS]
    assert rows.with_each(7, at_start=False).tolist() == [[*row, 7] for row in ROWS]


def test_rows_are_stacked_joined_and_paired():
    rows, other = Ragged.from_lists(ROWS), Ragged.from_lists(OTHER)
    assert stacked([rows, other]).tolist() == ROWS + OTHER
    assert joined([rows, other]).tolist() == [a + b for a, b in zip(ROWS, OTHER, strict=True)]
    pairs = joined([rows.paired(0), other.paired(1)])
    assert pairs.tolist() == [[[v, 0] for v in a] + [[v, 1] for v in b] for a, b in zip(ROWS, OTHER, strict=True)]
    squares = Ragged.from_lists([[v * v for v in row] for row in ROWS])
    assert rows.paired(squares).tolist() == [[[v, v * v] for v in row] for row in ROWS]


def test_a_growing_array_keeps_every_value_past_its_capacity():
    growing, chunks = Growing(), [np.arange(start, start + size) for start, size in ((0, 700), (700, 0), (700, 2500))]
    for chunk in chunks:
        growing.extend(chunk)
    assert growing.size == 3200 and growing.view().tolist() == list(range(3200))
