"""Sampling the SFT mixture task by task gives the examples of building every task, then sampling."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from test_sft import code_tables

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.sft.data import TaskMixture, sample_per_task
from align3gr.sft.tasks import TASKS, TaskBuilder


def random_dataset(seed: int) -> Dataset:
    """30 users over 40 items, with profiles, intentions and preference statements."""
    rng = random.Random(seed)
    items = {f"i{k}": Item(f"i{k}", f"Title {k}", f"About {k}." if k % 3 else "") for k in range(40)}
    sequences = {}
    for u in range(30):
        seq = rng.sample(list(items), rng.randrange(4, 15))
        sequences[f"u{u}"] = Sequence(f"u{u}", seq, list(range(len(seq))))
    users = {u: User(u, f"Profile of {u}." if int(u[1:]) % 4 else "") for u in sequences}
    dataset = Dataset(items=items, users=users, sequences=sequences, meta={"max_history": 5})
    dataset.intentions = [{"user_id": u, "item_id": s.items[1], "query": f"q {u}"} for u, s in sequences.items()]
    dataset.preferences = {u: f"{u} likes things." for u in list(sequences)[::2]}
    return dataset


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("tasks", "limit", "limits"),
    [
        (list(TASKS), None, None),
        (list(TASKS), 7, None),
        (list(TASKS), 20, {"seq": None, "item_align": 3}),
        (["preference", "seq", "item_align", "seq"], 25, {"preference": 0}),
    ],
)
def test_the_streamed_mixture_equals_sampling_the_whole_mixture(seed, tasks, limit, limits):
    dataset = random_dataset(seed)
    builder = TaskBuilder(dataset, *code_tables(dataset), seed=seed)
    expected = sample_per_task(builder.build(tasks), limit, seed, limits)
    mixture = TaskMixture(builder, tasks, limit, seed, limits)
    assert list(mixture) == expected and list(mixture) == expected  # a stream that reads the same twice
    assert mixture.counts == dict(Counter(e.task for e in expected))
