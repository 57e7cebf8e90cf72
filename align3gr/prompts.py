"""Locating, loading and checking the YAML templates in `prompts/` (overridable with ALIGN3GR_PROMPTS).

A prompt file maps each kind of text to its paraphrases: a list of `str.format` templates, or a single string
(one paraphrase). Callers name the kinds they need and the placeholders each may use, so an edited file with a
missing kind or a misspelt placeholder fails when it is loaded, naming the file and the entry, not halfway
through a build with a bare KeyError.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

import align3gr
from align3gr.errors import ConfigError
from align3gr.io import sha256_file


def prompts_dir() -> Path:
    """`$ALIGN3GR_PROMPTS`, or the `prompts/` folder beside the installed `align3gr` package."""
    override = os.environ.get("ALIGN3GR_PROMPTS")
    return Path(override) if override else Path(align3gr.__file__).resolve().parent.parent / "prompts"


def prompt_file(name: str) -> Path:
    """The file of prompt set `name`: `NAME.yaml` in `prompts_dir()`."""
    return prompts_dir() / f"{name}.yaml"


def prompt_digest(name: str) -> str | None:
    """The sha256 of prompt set `name`'s file (None when there is none): what a stage reading it depends on beyond
    its options, so an edited template makes the stage's output out of date."""
    path = prompt_file(name)
    return sha256_file(path) if path.is_file() else None


def _load(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found (set ALIGN3GR_PROMPTS to the folder holding it)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping from text kinds to templates")
    return document


def placeholders(template: str) -> set[str]:
    """The fields a `str.format` template refers to, those nested in format specs included ('{a:{b}}' gives 'a' and
    'b'); attribute and index access stay whole ('{a.b}' gives 'a.b', '{}' gives ''), so they are never allowed
    names and fail when the file is loaded rather than halfway through a build."""
    names = set()
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field)
            if spec:
                names |= placeholders(spec)
    return names


def _paraphrases(path: Path, kind: str, value: object, allowed: Collection[str]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        found = "nothing" if value is None else type(value).__name__
        raise ConfigError(f"{path}: '{kind}' must be a template string or a non-empty list of them, got {found}")
    for template in value:
        try:
            unknown = placeholders(template) - set(allowed)
        except ValueError as err:
            raise ConfigError(f"{path}: '{kind}': malformed template {template!r}: {err}") from None
        if unknown:
            raise ConfigError(
                f"{path}: '{kind}': template {template!r} uses {sorted(unknown)}; "
                f"the placeholders available are {sorted(allowed)}"
            )
    return value


def load_prompts(name: str, kinds: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
    """The paraphrases of each kind in `kinds` from `prompts/NAME.yaml`, checked: every kind present and
    each template using only the placeholders `kinds` allows it. Other entries of the file are ignored. The file
    is read on every call (callers load once per stage), so an edited file is always seen."""
    path = prompt_file(name)
    document = _load(path)
    return {kind: _paraphrases(path, kind, document.get(kind), allowed) for kind, allowed in kinds.items()}


def pick(templates: list[str], seed: int, *key: str) -> str:
    """A template chosen deterministically from the seed and a stable hash of the key (not Python's hash)."""
    digest = hashlib.sha256(":".join((str(seed), *key)).encode()).digest()
    return templates[int.from_bytes(digest[:8], "little") % len(templates)]
