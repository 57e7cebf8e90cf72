"""Records of the canonical dataset (items, users, sequences) and their validation from JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceOf
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from align3gr.errors import DataError

FEEDBACK_LEVELS = ("disliked", "neutral", "liked")


@dataclass
class Item:
    """An item: text for the semantic encoder and the alignment tasks."""

    item_id: str
    title: str
    description: str = ""
    categories: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class User:
    """A user: a profile sentence and raw attributes (age, gender, ...)."""

    user_id: str
    profile: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Sequence:
    """One user's chronological interactions; parallel lists, optional ones `None`."""

    user_id: str
    items: list[str]
    timestamps: list[int]
    ratings: list[float] | None = None
    reviews: SequenceOf[str] | None = None
    feedback: list[str] | None = None

    @property
    def train_items(self) -> list[str]:
        """The training interactions: all but the last two, the valid and test targets (leave-one-out)."""
        return self.items[:-2]

    @property
    def train_ratings(self) -> list[float] | None:
        """The ratings of `train_items`, or None without ratings."""
        return None if self.ratings is None else self.ratings[:-2]

    @property
    def train_reviews(self) -> SequenceOf[str] | None:
        """The reviews of `train_items` (read from disk when spooled), or None without reviews."""
        return None if self.reviews is None else self.reviews[:-2]

    def to_json(self) -> dict:
        """The JSON row; review text kept on disk during a build (`SpooledTexts`) is read here, one user at a time."""
        row = {"user_id": self.user_id, "items": self.items, "timestamps": self.timestamps, "ratings": self.ratings}
        row["reviews"] = None if self.reviews is None else list(self.reviews)
        row["feedback"] = self.feedback
        return row


def _require(row: dict, key: str, kind: type | tuple[type, ...], path: Path, line: int) -> Any:
    if key not in row:
        raise DataError(f"missing required field '{key}'", path, line)
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"field '{key}' must be {names}, got {type(value).__name__}", path, line)
    return value


def _string_list(row: dict, key: str, path: Path, line: int) -> list[str]:
    values = _require(row, key, list, path, line)
    if not all(isinstance(v, str) for v in values):
        raise DataError(f"field '{key}' must be a list of strings", path, line)
    return values


def _optional_list(row: dict, key: str, length: int, kinds: tuple[type, ...], path: Path, line: int) -> list | None:
    values = row.get(key)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != length:
        raise DataError(f"field '{key}' must be null or a list of {length} values (one per item)", path, line)
    for value in values:
        if value is None or isinstance(value, bool) or not isinstance(value, kinds):
            raise DataError(f"field '{key}' holds {value!r}; expected {kinds[0].__name__} values", path, line)
    return values


def item_from_json(row: dict, path: Path, line: int) -> Item:
    """Validate one line of `items.jsonl`."""
    attributes = row.get("attributes", {})
    if not isinstance(attributes, dict):
        raise DataError("field 'attributes' must be an object", path, line)
    description = row.get("description") or ""
    if not isinstance(description, str):
        raise DataError("field 'description' must be a string", path, line)
    return Item(
        item_id=_require(row, "item_id", str, path, line),
        title=_require(row, "title", str, path, line),
        description=description,
        categories=_string_list(row, "categories", path, line) if "categories" in row else [],
        attributes=attributes,
    )


def user_from_json(row: dict, path: Path, line: int) -> User:
    """Validate one line of `users.jsonl`."""
    attributes = row.get("attributes", {})
    if not isinstance(attributes, dict):
        raise DataError("field 'attributes' must be an object", path, line)
    profile = row.get("profile") or ""
    if not isinstance(profile, str):
        raise DataError("field 'profile' must be a string", path, line)
    return User(user_id=_require(row, "user_id", str, path, line), profile=profile, attributes=attributes)


def _finite(number: float) -> bool:
    """Whether a parsed JSON number is finite as a float (an integer too large for one is not)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def sequence_from_json(row: dict, path: Path, line: int) -> Sequence:
    """Validate one line of `sequences.jsonl`: parallel lists, chronological, no repeated item."""
    user_id = _require(row, "user_id", str, path, line)
    items = _string_list(row, "items", path, line)
    if len(items) < 3:
        raise DataError(f"user '{user_id}' has {len(items)} items; leave-one-out needs at least 3", path, line)
    if len(set(items)) != len(items):
        raise DataError(f"user '{user_id}' repeats an item; each item appears once per user", path, line)
    timestamps = _require(row, "timestamps", list, path, line)
    if len(timestamps) != len(items) or not all(isinstance(t, int) and not isinstance(t, bool) for t in timestamps):
        raise DataError("field 'timestamps' must be a list of integers, one per item", path, line)
    if any(b < a for a, b in pairwise(timestamps)):
        raise DataError(f"user '{user_id}': timestamps are not in chronological order", path, line)
    ratings = _optional_list(row, "ratings", len(items), (int, float), path, line)
    if ratings is not None and not all(_finite(r) for r in ratings):
        raise DataError("field 'ratings' holds a non-finite number", path, line)
    feedback = _optional_list(row, "feedback", len(items), (str,), path, line)
    if feedback is not None and not set(feedback) <= set(FEEDBACK_LEVELS):
        raise DataError(f"field 'feedback' values must be one of {FEEDBACK_LEVELS}", path, line)
    return Sequence(
        user_id=user_id,
        items=items,
        timestamps=timestamps,
        ratings=ratings,
        reviews=_optional_list(row, "reviews", len(items), (str,), path, line),
        feedback=feedback,
    )
