"""The canonical dataset: loading with validation, writing, and the leave-one-out splits."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Iterator
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from align3gr.data.schema import Item, Sequence, User, item_from_json, sequence_from_json, user_from_json
from align3gr.errors import DataError
from align3gr.io import iter_json_lines, read_json, write_json, write_jsonl

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")
DEFAULT_MAX_HISTORY = 20
T = TypeVar("T")


@dataclass(frozen=True)
class Example:
    """One next-item example: a user's history (oldest first, cut to the last N) and the target."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass
class Dataset:
    """Items, users and sequences of the canonical format, plus the task texts built with them."""

    items: dict[str, Item]
    users: dict[str, User]
    sequences: dict[str, Sequence]
    meta: dict = field(default_factory=dict)
    intentions: list[dict] | IntentionRows = field(default_factory=list)
    preferences: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def max_history(self) -> int:
        return int(self.meta.get("max_history", DEFAULT_MAX_HISTORY))

    def train_items(self, user_id: str, holdout: int = 0) -> list[str]:
        """The user's training interactions: all but the last two (valid and test targets), and without the last
        `holdout` of them."""
        items = self.sequences[user_id].train_items
        return items[: max(0, len(items) - holdout)]

    def seen_before(self, user_id: str, split: Split) -> list[str]:
        """Every item of the user before the target of `split` (valid: `items[:-2]`, test: `items[:-1]`), uncut:
        what evaluation excludes from the ranked list."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return self.sequences[user_id].items[: -2 if split == "valid" else -1]

    def examples(self, split: Split, max_history: int | None = None, holdout: int = 0) -> list[Example]:
        """Leave-one-out examples. `train`: every prefix of the training part predicting its next item (without each
        user's last `holdout` training items); `valid`: training part -> second-to-last item; `test`: all but the
        last -> last item."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        limit = self.max_history if max_history is None else max_history
        out: list[Example] = []
        for user_id, seq in self.sequences.items():
            if split == "train":
                train = self.train_items(user_id, holdout)
                out.extend(
                    Example(user_id, tuple(train[max(0, t - limit) : t]), train[t]) for t in range(1, len(train))
                )
            else:
                end = len(seq.items) - (2 if split == "valid" else 1)
                out.append(Example(user_id, tuple(seq.items[max(0, end - limit) : end]), seq.items[end]))
        return out

    def statistics(self) -> dict[str, float | int]:
        """Counts, sequence lengths and density, as printed after a build."""
        lengths = [len(s.items) for s in self.sequences.values()]
        interactions = sum(lengths)
        return {
            "users": len(self.sequences),
            "items": len(self.items),
            "interactions": interactions,
            "density": interactions / max(1, len(self.sequences) * len(self.items)),
            "avg_sequence_length": interactions / max(1, len(lengths)),
            "min_sequence_length": min(lengths, default=0),
            "max_sequence_length": max(lengths, default=0),
            "items_with_description": sum(1 for item in self.items.values() if item.description),
            "items_with_categories": sum(1 for item in self.items.values() if item.categories),
            "train_examples": sum(max(0, n - 3) for n in lengths),
            "intentions": len(self.intentions) or self.meta.get("counts", {}).get("intentions", 0),
            "preferences": len(self.preferences),
        }


def _load_records(path: Path, parse: Callable[[dict, Path, int], T], key: str) -> tuple[dict[str, T], dict[str, int]]:
    """The records of a JSON Lines file keyed by their `key` field, and the line each is on."""
    records: dict[str, T] = {}
    lines: dict[str, int] = {}
    for line, row in iter_json_lines(path):
        record = parse(row, path, line)
        ident = getattr(record, key)
        if ident in records:
            raise DataError(f"duplicate {key} '{ident}' (first on line {lines[ident]})", path, line)
        records[ident] = record
        lines[ident] = line
    return records, lines


def load_dataset(path: str | Path) -> Dataset:
    """Load and validate a canonical dataset folder; every error names the file and line."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise DataError("not a canonical dataset folder (no meta.json); build one with `align3gr data build`", path)
    meta = read_json(path / "meta.json")
    items, _ = _load_records(path / "items.jsonl", item_from_json, "item_id")
    users, _ = _load_records(path / "users.jsonl", user_from_json, "user_id")
    sequences, lines = _load_records(path / "sequences.jsonl", sequence_from_json, "user_id")
    for user_id, line in lines.items():
        seq = sequences[user_id]
        if seq.user_id not in users:
            raise DataError(f"user '{seq.user_id}' is not in users.jsonl", path / "sequences.jsonl", line)
        unknown = next((i for i in seq.items if i not in items), None)
        if unknown is not None:
            raise DataError(f"item '{unknown}' is not in items.jsonl", path / "sequences.jsonl", line)
    dataset = Dataset(items=items, users=users, sequences=sequences, meta=meta, path=path)
    if (path / "intentions.jsonl").is_file():
        dataset.intentions = IntentionRows(path / "intentions.jsonl", dataset.users, dataset.items)
    if (path / "preferences.jsonl").is_file():
        for line, row in iter_json_lines(path / "preferences.jsonl"):
            if (
                not isinstance(row.get("user_id"), str)
                or row["user_id"] not in sequences
                or not isinstance(row.get("statement"), str)
            ):
                raise DataError(
                    "expected 'user_id' of a user with a sequence in sequences.jsonl and a string 'statement'",
                    path / "preferences.jsonl",
                    line,
                )
            dataset.preferences[row["user_id"]] = row["statement"]
    return dataset


def kept_positions(size: int, cap: int | None, rng: random.Random) -> SequenceOf[int]:
    """The positions of `size` rows (a task's examples, a user's intentions) that a cap of `cap` keeps (None: all): a
    seeded sample, ascending."""
    return sorted(rng.sample(range(size), cap)) if cap is not None and size > cap else range(size)


class IntentionRows:
    """The rows of a folder's `intentions.jsonl`, read and checked again on every pass instead of held in memory:
    there is one per training target (millions of dicts at catalogue scale), and only SFT reads them. A bad row
    raises a DataError naming its line when a pass reaches it; `len` makes a checking pass once. A file replaced or
    edited after the load is an error, not a silent change of the rows between passes."""

    def __init__(self, path: Path, users: Collection[str], items: Collection[str]) -> None:
        self.path, self.users, self.items = path, users, items
        self._stamp = self._file_stamp()
        self._count: int | None = None

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def __iter__(self) -> Iterator[dict]:
        if self._file_stamp() != self._stamp:
            raise DataError("the file changed after its dataset was loaded; load the dataset again", self.path)
        count = 0
        for line, row in iter_json_lines(self.path):
            user_id, item_id = row.get("user_id"), row.get("item_id")
            if not isinstance(user_id, str) or not isinstance(item_id, str):
                raise DataError("fields 'user_id' and 'item_id' must be strings", self.path, line)
            if user_id not in self.users or item_id not in self.items:
                raise DataError("expected 'user_id' and 'item_id' of a known user and item", self.path, line)
            if not isinstance(row.get("query"), str):
                raise DataError("field 'query' must be a string", self.path, line)
            count += 1
            yield row
        self._count = count

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count


def write_dataset(dataset: Dataset, folder: str | Path, intentions: Iterable[dict] | None = None) -> None:
    """Write the canonical files into `folder` (the caller makes it atomic). `intentions` may be a generator
    (consumed while writing) in place of `dataset.intentions`; their count goes into `meta.json`."""
    folder = Path(folder)
    write_jsonl(folder / "items.jsonl", (item.to_json() for item in dataset.items.values()))
    write_jsonl(folder / "users.jsonl", (user.to_json() for user in dataset.users.values()))
    write_jsonl(folder / "sequences.jsonl", (seq.to_json() for seq in dataset.sequences.values()))
    count = write_jsonl(folder / "intentions.jsonl", dataset.intentions if intentions is None else intentions)
    write_jsonl(
        folder / "preferences.jsonl",
        ({"user_id": user, "statement": text} for user, text in dataset.preferences.items()),
    )
    dataset.meta.setdefault("counts", {}).update(intentions=count, preferences=len(dataset.preferences))
    dataset.meta["statistics"] = dataset.statistics()
    write_json(folder / "meta.json", dataset.meta)
