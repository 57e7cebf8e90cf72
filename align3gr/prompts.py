"""Locating and loading the YAML templates in `prompts/` (overridable with ALIGN3GR_PROMPTS)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

import align3gr
from align3gr.errors import ConfigError


def prompts_dir() -> Path:
    """`$ALIGN3GR_PROMPTS`, or the `prompts/` folder beside the installed `align3gr` package."""
    override = os.environ.get("ALIGN3GR_PROMPTS")
    return Path(override) if override else Path(align3gr.__file__).resolve().parent.parent / "prompts"


@functools.cache
def _load(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found (set ALIGN3GR_PROMPTS to the folder holding it)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of template lists")
    return document


def load_prompts(name: str) -> dict:
    """The templates of `prompts/NAME.yaml` as a mapping (cached per path)."""
    return _load(prompts_dir() / f"{name}.yaml")
