"""Errors raised on bad user input: each names the file, line or field, and what was expected."""

from __future__ import annotations

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
