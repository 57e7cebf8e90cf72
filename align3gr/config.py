"""Dataclass configs: one documented field per option, filled from YAML files and command-line flags.

Every stage's options are a dataclass whose fields carry `metadata={"help": ...}` (and `"choices"` where an option
takes one of a few values); the CLI and the recipes expose them the same way, so a stage run alone and inside the
pipeline share one schema. Every value read, from YAML or a flag, is converted to its field's type (`convert_value`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

import yaml

from align3gr.errors import ConfigError

C = TypeVar("C")


TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def _field_hint(cls: type, f: dataclasses.Field) -> tuple[Any, bool]:
    """The field's annotated type without `None`, and whether `None` is allowed (`X | None`)."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _type_name(hint: Any) -> str:
    """How an error names a type: `int`, `float`, ... (`list[int]` as written)."""
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


def _convert_scalar(kind: Any, value: Any) -> Any:
    """`value` as a `kind` (bool, int, float, str, dict) by the rules of the README's config section; ValueError if
    it is not one."""
    text = value.strip() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in TRUE_WORDS + FALSE_WORDS:
            return text.lower() in TRUE_WORDS
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None:
            with contextlib.suppress(ValueError):
                return int(text)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # an int stays an int, as YAML gave it before (same values, same fingerprints)
        if text is not None:
            with contextlib.suppress(ValueError):
                return int(text)
            with contextlib.suppress(ValueError):
                return float(text)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is dict or typing.get_origin(kind) is dict:
        if isinstance(value, dict):
            return value  # option mappings: their own dataclasses check them in `validate`
    else:
        raise TypeError(f"config fields of type {kind} are not supported")
    raise ValueError(value)


def _convert_one(kind: Any, value: Any, choices: Collection[Any] | None, context: str, expected: str) -> Any:
    """One value as a `kind` among `choices`; otherwise a `ConfigError` starting with `context`."""
    try:
        converted = _convert_scalar(kind, value)
    except ValueError:
        raise ConfigError(f"{context}expected {expected}") from None
    if choices is not None and converted not in choices:
        raise ConfigError(f"{context}expected one of {', '.join(map(str, choices))}")
    return converted


def convert_value(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """Option `name` of config class `cls`, read from a YAML file (`where`: the file and section) or given as a flag
    (`where` None), converted to the field's type and checked against its `choices`; otherwise a `ConfigError` naming
    the file and section or the flag, the option, the value and the expected type."""
    f = cls.__dataclass_fields__[name]
    kind, optional = _field_hint(cls, f)
    choices = f.metadata.get("choices")
    context = f"{where}: {name}={value!r}: " if where is not None else f"--{name.replace('_', '-')} {value!r}: "
    if value is None and optional:
        return None
    if typing.get_origin(kind) is not list:
        return _convert_one(kind, value, choices, context, _type_name(kind) + (" or null" if optional else ""))
    item = typing.get_args(kind)[0]
    expected = f"a list of {_type_name(item)} (a YAML list or comma-separated values)"
    elements = [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value
    if not isinstance(elements, (list, tuple)):
        raise ConfigError(f"{context}expected {expected}")
    return [_convert_one(item, e, choices, f"{context}{e!r} in the list: ", _type_name(item)) for e in elements]


def _metavar(kind: Any, choices: Collection[Any] | None) -> str:
    """What `--help` shows as a flag's value: its choices (`{a,b}`), or its type; `,...` for a list."""
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
    shown = "{" + ",".join(map(str, choices)) + "}" if choices is not None else _type_name(item).upper()
    return shown + ",..." if item is not kind else shown


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, only: Collection[str] | None = None) -> None:
    """Add one `--field-name` flag per dataclass field but the option mappings (help text and choices from the
    field's metadata; a list as comma-separated values), or per field named in `only`. The flags' text is converted
    by `config_from_sources`, as YAML values are."""
    group = parser.add_argument_group(cls.__name__, cls.__doc__)
    for f in dataclasses.fields(cls):
        kind, _ = _field_hint(cls, f)
        if kind is dict or typing.get_origin(kind) is dict or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = _metavar(kind, f.metadata.get("choices"))
            group.add_argument(flag, dest=f.name, default=None, help=help_text, metavar=metavar)


def config_from_sources(
    cls: type[C], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> C:
    """Build `cls` from defaults, then a YAML file (its top level, or its `cls.section` mapping), then overrides (the
    command line's flags); every value converted to its field's type (`convert_value`) before the config is built."""
    section = getattr(cls, "section", None)
    sources: list[tuple[dict[str, Any], str | None]] = []
    if yaml_path is not None:
        nested = section is not None and isinstance(read_yaml_mapping(yaml_path).get(section), dict)
        where = f"{yaml_path}, section {section!r}" if nested else str(yaml_path)
        sources.append((read_yaml_section(yaml_path, section), where))
    sources.append(({k: v for k, v in (overrides or {}).items() if v is not None}, None))
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for given, where in sources:
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(
                f"{where or 'overrides'}: unknown option {unknown[0]!r} for {cls.__name__}; known options: "
                f"{', '.join(sorted(names))}"
            )
        values.update({name: convert_value(cls, name, value, where) for name, value in given.items()})
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
