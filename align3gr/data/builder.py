"""The builder interface that turns one raw format into interactions and metadata, and its registry."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from align3gr.data.config import PACKAGED_SOURCE
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item, User
from align3gr.errors import ConfigError, DataError

BUILTIN_BUILDERS = {
    "movielens": "data_builders.movielens:MovieLensBuilder",
    "amazon": "data_builders.amazon:AmazonBuilder",
    "yelp": "data_builders.yelp:YelpBuilder",
    "lcrec": "data_builders.lcrec:LCRecBuilder",
}
ENTRY_POINT_GROUP = "align3gr.data_builders"


@dataclass
class RawData:
    """What a builder reads: interactions, item metadata and user attributes (users may be empty)."""

    interactions: InteractionLog
    items: dict[str, Item]
    users: dict[str, User] = field(default_factory=dict)


class Builder:
    """Base class of the raw-format adapters in `data_builders/`.

    A subclass sets `name` and `version` (bump it when its output changes), lists the files it reads
    in `sources` (hashed into `meta.json`), and reads them in `read`. `missing_metadata` is its
    default for interactions whose item has no metadata: "error", or "drop" where the format is known
    to have such items (Amazon). `options` are builder-specific `key=value` settings from the CLI.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    missing_metadata: ClassVar[str] = "error"
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: dict[str, str] | None = None) -> None:
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.option_names))
        if unknown:
            accepted = ", ".join(self.option_names) or "none"
            raise ConfigError(f"builder '{self.name}' has no option {unknown[0]!r} (accepted: {accepted})")

    def sources(self, source: Path) -> list[Path]:
        raise NotImplementedError

    def read(self, source: Path) -> RawData:
        raise NotImplementedError

    @staticmethod
    def folder_of(source: Path) -> Path:
        """The folder a builder reads: `source`, or the folder of the file `source` names; a DataError when `source`
        does not exist (a mistyped folder must not fall back to its parent)."""
        if not source.exists() and str(source) == PACKAGED_SOURCE:
            raise DataError(
                "no --source given (`source:` in a config): give the folder or a file of your raw data (the default, "
                f"{PACKAGED_SOURCE!r}, is MovieLens-100K for builder 'movielens')"
            )
        if not source.exists():
            raise DataError("not found: expected the dataset's folder or one of its files", source)
        return source if source.is_dir() else source.parent


def missing(value: object) -> bool:
    """Whether a raw field's value is no value: None, or NaN (what Python's `json.dumps` writes for a missing float,
    pandas' NaN; Infinity is none either), which the canonical files, standard JSON, cannot hold."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def identifier(row: dict, name: str, path: Path, line: int) -> str:
    """The ID in field `name` of a parsed JSON row: a string, or an integer taken as its digits; anything else (null,
    a list, a boolean) is a DataError naming the file and line."""
    value = row[name]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DataError(f"field '{name}' must be an ID (a string), got {value!r}", path, line)


def builder_names() -> list[str]:
    """Built-in builder names plus those registered by other packages under the entry-point group."""
    return sorted(set(BUILTIN_BUILDERS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_builder(name: str, options: dict[str, str] | None = None) -> Builder:
    """Instantiate the builder called `name`; unknown names raise a ConfigError listing the known ones."""
    target = BUILTIN_BUILDERS.get(name)
    if target is None:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            raise ConfigError(f"unknown builder {name!r}; known builders: {', '.join(builder_names())}")
        cls = matches[0].load()
    else:
        module, attr = target.split(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls(options)
