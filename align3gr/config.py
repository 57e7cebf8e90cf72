"""Dataclass configs: one documented field per option, filled from YAML files and command-line flags.

Every stage's options are a dataclass whose fields carry `metadata={"help": ...}`; the CLI and the
recipes expose them the same way, so a stage run alone and inside the pipeline share one schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml

from align3gr.errors import ConfigError

C = TypeVar("C")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0]
    return hint


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, only: Collection[str] | None = None) -> None:
    """Add one `--field-name` flag per scalar dataclass field (help text from the field's metadata), or per field
    named in `only`."""
    group = parser.add_argument_group(cls.__name__, cls.__doc__)
    for f in dataclasses.fields(cls):
        kind = _field_type(cls, f)
        if kind not in (bool, int, float, str) or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def config_from_sources(
    cls: type[C], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> C:
    """Build `cls` from defaults, then a YAML file (its top level, or its `cls.section` mapping), then overrides."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(read_yaml_section(yaml_path, getattr(cls, "section", None)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for {cls.__name__}; known options: {', '.join(sorted(names))}"
        )
    try:
        config = cls(**values)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty one); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def read_yaml_section(path: str | Path, section: str | None) -> dict[str, Any]:
    """The options of `section` in a YAML file: the mapping under its `section` key; nothing when the file is made of
    other sections only (every top-level value a mapping, as in a pipeline config); the whole file when it is flat."""
    document = read_yaml_mapping(path)
    if section is not None and isinstance(document.get(section), dict):
        return dict(document[section])
    if section is not None and document and all(isinstance(value, dict) for value in document.values()):
        return {}
    return document


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (for meta files and fingerprints)."""
    return dataclasses.asdict(config)
