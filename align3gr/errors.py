"""Errors raised on bad user input: each names the file, line or field, and what was expected."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path


class Align3GRError(Exception):
    """Base class of the errors this toolkit raises on bad input or configuration."""


class DataError(Align3GRError, ValueError):
    """Bad input data; the message names where (file:line or field) and what was expected."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line


class ConfigError(Align3GRError, ValueError):
    """An invalid option; the message names the option and the accepted values."""


def check_numbers(owner: object, names: Iterable[str], *, positive: bool = False, prefix: str = "") -> None:
    """A ConfigError naming the first of `owner`'s fields `names` that is not a finite number >= 0 (> 0 with
    `positive`): a NaN passes every comparison, and an infinity every lower bound."""
    for name in names:
        value = getattr(owner, name)
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ConfigError(f"{prefix}{name}={value}: must be {'>' if positive else '>='} 0 (a finite number)")


def closest_matches(value: str, choices: Iterable[str], n: int = 5) -> str:
    """What an error about the unknown `value` suggests: the `n` closest of `choices` (difflib, case-insensitive),
    or the first few choices when none is close."""
    by_key: dict[str, str] = {}
    for choice in choices:
        by_key.setdefault(choice.casefold(), choice)
    close = difflib.get_close_matches(value.casefold(), list(by_key), n=n, cutoff=0.5)
    if close:
        return "closest: " + ", ".join(repr(by_key[key]) for key in close)
    return f"none is close (of {len(by_key)}, e.g. " + ", ".join(repr(c) for c in list(by_key.values())[:n]) + ")"
