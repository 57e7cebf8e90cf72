"""Dataclass configs: one documented field per option, filled from YAML files and command-line flags.

Every stage's options are a dataclass whose fields carry `metadata={"help": ...}` (and `"choices"` where an option
takes one of a few values); the CLI and the recipes expose them the same way, so a stage run alone and inside the
pipeline share one schema. Every value read, from YAML or a flag, is converted to its field's type (`convert_value`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import enum
import functools
import types
import typing
from collections.abc import Collection, Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from align3gr.errors import ConfigError

C = TypeVar("C")


TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_kinds(cls: type, f: dataclasses.Field) -> tuple[list[Any], bool]:
    """The types a field's annotation allows but `None`, and whether `None` is allowed (`X | None`). An enum's values
    stand for the `str` beside it (`OptimizerNames | str` takes an optimizer's name); `str` is tried last, so "true"
    is a bool and "a,b" a list where the field allows one."""
    hint = _hints(cls)[f.name]
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    args = typing.get_args(hint) if union else (hint,)
    kinds = [a for a in args if a is not type(None)]
    if any(_is_enum(kind) for kind in kinds):
        kinds = [kind for kind in kinds if kind is not str]
    return sorted(kinds, key=lambda kind: kind is str), type(None) in args


def _field_hint(cls: type, f: dataclasses.Field) -> tuple[Any, bool]:
    """The field's (first) annotated type without `None`, and whether `None` is allowed (`X | None`)."""
    kinds, optional = _field_kinds(cls, f)
    return kinds[0], optional


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def _type_name(hint: Any) -> str:
    """How an error names a type: `int`, `float`, ... (`list[int]` as written); an enum or literal by its values."""
    if _is_enum(hint):
        return "one of " + ", ".join(str(member.value) for member in hint)
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)


def close_matches(word: str, known: Collection[str]) -> str:
    """`; did you mean X?` naming the names of `known` close to a mistyped `word` (nothing when none is)."""
    matches = difflib.get_close_matches(word, sorted(known), n=3)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


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
        text_only = typing.get_args(kind) == (str, str)  # builder options: paths and words, read as text
        if isinstance(value, dict) and not (text_only and not all(isinstance(v, str) for v in value.values())):
            return value  # option mappings: their own dataclasses, or the field's `check`, check them
    elif _is_enum(kind):
        values = [member.value for member in kind]
        if isinstance(value, kind) or value in values:
            return kind(value).value
    elif typing.get_origin(kind) is typing.Literal:
        for allowed in typing.get_args(kind):
            if type(value) is type(allowed) and value == allowed:
                return value
    else:
        raise TypeError(f"config fields of type {kind} are not supported")
    raise ValueError(value)


def _convert_one(kind: Any, value: Any, choices: Collection[Any] | None, context: str, expected: str) -> Any:
    """One value as a `kind` among `choices`; otherwise a `ConfigError` starting with `context`."""
    try:
        converted = _convert_scalar(kind, value)
    except ValueError:
        near = close_matches(value, [str(m.value) for m in kind]) if _is_enum(kind) and isinstance(value, str) else ""
        raise ConfigError(f"{context}expected {expected}{near}") from None
    if choices is not None and converted not in choices:
        raise ConfigError(f"{context}expected one of {', '.join(map(str, choices))}")
    return converted


def _list_expected(kind: Any) -> str:
    return f"a list of {_type_name(typing.get_args(kind)[0])} (a YAML list or comma-separated values)"


def _convert_kind(kind: Any, value: Any, choices: Collection[Any] | None, context: str, or_null: str) -> Any:
    """`value` as one of the types a field allows (a list: its elements converted one by one)."""
    if typing.get_origin(kind) is not list:
        return _convert_one(kind, value, choices, context, _type_name(kind) + or_null)
    item = typing.get_args(kind)[0]
    elements = [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value
    if not isinstance(elements, (list, tuple)):
        raise ConfigError(f"{context}expected {_list_expected(kind)}")
    return [_convert_one(item, e, choices, f"{context}{e!r} in the list: ", _type_name(item)) for e in elements]


def _is_mapping(kind: Any) -> bool:
    """Whether a field's type is a mapping (`dict`, `dict[str, int]`): an option set in the YAML, or by a named flag."""
    return kind is dict or typing.get_origin(kind) is dict


def flag_of(f: dataclasses.Field) -> str:
    """A field's command-line flag: `--field-name`, or the one its metadata names (`"flag"`)."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def convert_value(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """Option `name` of config class `cls`, read from a YAML file (`where`: the file and section) or given as a flag
    (`where` None), converted to the field's type and checked against its `choices`; otherwise a `ConfigError` naming
    the file and section or the flag, the option, the value and the expected type. A field allowing several types
    takes the first that fits; a mapping whose field's metadata has a `check(cls, mapping, where)` goes through it."""
    f = cls.__dataclass_fields__[name]
    kinds, optional = _field_kinds(cls, f)
    choices = f.metadata.get("choices")
    if where is None and "flag" not in f.metadata and any(map(_is_mapping, kinds)):
        where = "the command line"  # an option mapping has no flag of its own: `pipeline --training-arg` sets it
    context = f"{where}: {name}={value!r}: " if where is not None else f"{flag_of(f)} {value!r}: "
    if value is None and optional:
        return None
    or_null = " or null" if optional else ""
    if len(kinds) > 1:
        for kind in kinds:
            with contextlib.suppress(ConfigError):
                return _convert_kind(kind, value, choices, context, "")
        shown = [_list_expected(k) if typing.get_origin(k) is list else _type_name(k) for k in kinds]
        raise ConfigError(f"{context}expected {' or '.join(shown)}{or_null}")
    converted = _convert_kind(kinds[0], value, choices, context, or_null)
    check = f.metadata.get("check")
    return check(cls, converted, f"{where}: {name}" if where is not None else flag_of(f)) if check else converted


def options_field(target: type, help_text: str) -> Any:
    """A mapping field holding the options of another config class (a tokenizer regulariser's `hamr_options`:
    `HaMRConfig`'s): read through `check_options`, so its keys and values are checked like a section's."""
    return dataclasses.field(
        default_factory=dict,
        metadata={"help": help_text, "check": functools.partial(check_options, target), "options": target},
    )


def check_options(target: type, owner: type, values: Any, where: str) -> dict[str, Any]:
    """The `check` of an `options_field`: each key an option of `target` (else a ConfigError naming it and the close
    ones), each value converted to that option's type (`convert_value`)."""
    known = {f.name for f in dataclasses.fields(target)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: {target.__name__} has no option {key!r}{close_matches(str(key), known)}")
        checked[key] = convert_value(target, key, value, where)
    return checked


def _metavar(kind: Any, choices: Collection[Any] | None) -> str:
    """What `--help` shows as a flag's value: its choices (`{a,b}`), or its type; `,...` for a list."""
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
    shown = "{" + ",".join(map(str, choices)) + "}" if choices is not None else _type_name(item).upper()
    return shown + ",..." if item is not kind else shown


class KeyValues(argparse.Action):
    """A repeatable `--flag KEY=VALUE`: the pairs given, as one mapping (a later KEY wins)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        key, sep, value = str(values).partition("=")
        if not sep or not key.strip():
            parser.error(f"{option_string} {values!r}: expected KEY=VALUE")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), key.strip(): value})


def options_text(f: dataclasses.Field) -> str:
    """What `--help` says of an option mapping (set in the YAML only): its class's options and their defaults."""
    target = f.metadata["options"]
    defaults = []
    for option in dataclasses.fields(target):
        if option.default is not dataclasses.MISSING:
            defaults.append(f"{option.name}={option.default!r}")
        elif option.default_factory is not dataclasses.MISSING:
            defaults.append(f"{option.name}={option.default_factory()!r}")
        else:
            defaults.append(option.name)
    return (
        f"YAML only: {f.name}, {f.metadata['help']} Its keys and {target.__name__}'s defaults: {', '.join(defaults)}."
    )


def default_text(f: dataclasses.Field) -> str:
    """What `--help` appends to a flag's help: the field's default (`unset` for None, a list comma-separated)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None:
        shown = "unset"
    elif isinstance(value, bool):
        shown = "on" if value else "off"
    elif isinstance(value, list | tuple):
        shown = ",".join(map(str, value)) or "none"
    else:
        shown = str(value)
    return f" (default: {shown})".replace("%", "%%")  # argparse formats help text with %


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, only: Collection[str] | None = None) -> None:
    """Add one `--field-name` flag per dataclass field but the option mappings (help text and choices from the
    field's metadata; a list as comma-separated values), or per field named in `only`; a mapping whose metadata
    names a `flag` gets that flag, repeatable, as `KEY=VALUE`. The flags' text is converted by
    `config_from_sources`, as YAML values are."""
    yaml_only = [f for f in dataclasses.fields(cls) if "options" in f.metadata and (only is None or f.name in only)]
    described = " ".join([cls.__doc__ or "", *(options_text(f) for f in yaml_only)])
    group = parser.add_argument_group(cls.__name__, described)
    for f in dataclasses.fields(cls):
        kind, _ = _field_hint(cls, f)
        mapping = _is_mapping(kind)
        if (mapping and "flag" not in f.metadata) or (only is not None and f.name not in only):
            continue
        help_text = f.metadata.get("help", "")
        if mapping:
            group.add_argument(flag_of(f), dest=f.name, action=KeyValues, default=None, metavar="KEY=VALUE",
                               help=help_text + " Repeatable; merged into the YAML's mapping.")  # fmt: skip
        elif kind is bool:
            group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text + default_text(f))  # fmt: skip
        else:
            metavar = _metavar(kind, f.metadata.get("choices"))
            group.add_argument(flag_of(f), dest=f.name, default=None, help=help_text + default_text(f),
                               metavar=metavar)  # fmt: skip


def config_from_sources(
    cls: type[C],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overrides_from: str | None = None,
) -> C:
    """Build `cls` from defaults, then a YAML file (its top level, or its `cls.section` mapping), then overrides (the
    command line's flags); every value converted to its field's type (`convert_value`) before the config is built.
    A mapping given by both is merged key by key (nested mappings too), the overrides winning. Errors in overrides
    name their flags, or `overrides_from` (one flag feeding several sections: `pipeline --training-arg`)."""
    section = getattr(cls, "section", None)
    sources: list[tuple[dict[str, Any], str | None]] = []
    if yaml_path is not None:
        sources.append(read_yaml_section(yaml_path, section, [f.name for f in dataclasses.fields(cls)]))
    sources.append(({k: v for k, v in (overrides or {}).items() if v is not None}, overrides_from))
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for given, where in sources:
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(
                f"{where or 'overrides'}: unknown option {unknown[0]!r} for {cls.__name__}; known options: "
                f"{', '.join(sorted(names))}"
            )
        for name, value in given.items():
            values[name] = merged(values.get(name), convert_value(cls, name, value, where))
    try:
        config = cls(**values)
    except TypeError as err:
        raise ConfigError(f"{cls.__name__}: {err}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as err:
            given = [where or "the flags" for options, where in sources if options]
            raise ConfigError(f"{' and '.join(given) or f'{cls.__name__} defaults'}: {err}") from None
    return config


def merged(old: Any, new: Any) -> Any:
    """`new` over `old`: two mappings merged key by key (nested mappings too), anything else replaced."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    return {**old, **{key: merged(old.get(key), value) for key, value in new.items()}}


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: YAML keeps the last one silently, which would
    drop every option of a section written twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base constructor names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file (UTF-8) whose top level is a mapping (an empty file is an empty one); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


SECTION_NAMES = ("source", "data", "embed", "tokenize", "sft", "evaluate", "dpo")
"""The sections of a pipeline config (`align3gr.pipeline.config.SECTIONS`), which a stage command's file may hold."""


def read_yaml_section(
    path: str | Path, section: str | None, options: Collection[str] = ()
) -> tuple[dict[str, Any], str]:
    """The options of `section` in a YAML file and where they are (`FILE, section 'NAME'`, or `FILE`): the mapping
    under its `section` key; nothing when the file is made of other sections only (every top-level value a mapping,
    none of them one of the stage's `options`, as in a pipeline config); in both, a top-level key that is no section
    is an error (a misspelt section would leave its stage on its defaults); the whole file when it is flat. A section
    left empty (`dpo:` with its options commented out) is an empty mapping; a section name holding anything but a
    mapping is an error, unless the file is flat and the name is one of the stage's `options` (`source: PATH` of `data
    build`)."""
    document = read_yaml_mapping(path)
    document = {name: {} if name in SECTION_NAMES and value is None else value for name, value in document.items()}
    sections = [name for name in SECTION_NAMES if isinstance(document.get(name), dict)]
    for name in SECTION_NAMES:
        if name in document and not isinstance(document[name], dict) and (sections or name not in options):
            raise ConfigError(f"{path}: section {name!r}: expected a mapping, got {type(document[name]).__name__}")
    own = section is not None and isinstance(document.get(section), dict)
    sectioned = document and all(isinstance(value, dict) for value in document.values())
    if own or (section is not None and sectioned and not set(document) & set(options)):
        unknown = sorted(set(document) - set(SECTION_NAMES))
        if unknown:
            raise ConfigError(
                f"{path}: unknown section {unknown[0]!r} (the sections are {', '.join(SECTION_NAMES)})"
                + close_matches(str(unknown[0]), SECTION_NAMES)
            )
        return (dict(document[section]), f"{path}, section {section!r}") if own else ({}, str(path))
    return document, str(path)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (for meta files and fingerprints)."""
    return dataclasses.asdict(config)


OMITTED = object()
"""A field's `fingerprint` metadata leaving the option out of `fingerprint_options`."""
OMITTED_WHEN_UNSET = object()
"""A field's `fingerprint` metadata leaving the option out of `fingerprint_options` while it is None: an option
added after outputs were made without it, which keep their fingerprints (and runs their step keys) when it is unset."""


def fingerprint_options(config: Any) -> dict[str, Any]:
    """`config_to_dict` as step keys, lineages and stage fingerprints record it: a field whose metadata has a
    `fingerprint` (an option choosing where a stage computes, not what) recorded as that value, or left out if it is
    `OMITTED` (or `OMITTED_WHEN_UNSET` and None)."""
    fields = dataclasses.fields(config)
    fingerprints = {f.name: f.metadata["fingerprint"] for f in fields if "fingerprint" in f.metadata}
    options = config_to_dict(config)
    dropped = {name for name, value in fingerprints.items() if value is OMITTED}
    dropped |= {name for name, value in fingerprints.items() if value is OMITTED_WHEN_UNSET and options[name] is None}
    options |= {name: value for name, value in fingerprints.items() if value not in (OMITTED, OMITTED_WHEN_UNSET)}
    for f in fields:
        if "options" in f.metadata and isinstance(options.get(f.name), dict):
            options[f.name] = _nested_fingerprint(f.metadata["options"], options[f.name])
    return {name: value for name, value in options.items() if name not in dropped}


def _nested_fingerprint(target: type, values: dict[str, Any]) -> dict[str, Any]:
    """An `options_field` mapping as fingerprints record it: the keys `target` marks with a `fingerprint` left out
    (a cache location), unless `OMITTED_WHEN_UNSET` and set; unmarked keys as given, so keys stay as they were."""
    marks = {f.name: f.metadata["fingerprint"] for f in dataclasses.fields(target) if "fingerprint" in f.metadata}
    return {
        key: value
        for key, value in values.items()
        if key not in marks or (marks[key] is OMITTED_WHEN_UNSET and value is not None)
    }
