"""The SCID token format: code c of level l is one added token `<{prefix}_{c}>`, a prefix per side and level.

Items take a, b, c, ...; users ua, ub, uc, ... `tokenize` writes tokens with `code_tokens`; the code tables are
checked on reading with `level_token`, and `scid_tokens` lists the tokens for the vocabulary.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

TOKEN = re.compile(r"^<([a-z]+)_(\d+)>$")
MAX_LEVELS = len(string.ascii_lowercase)
"""Code levels a table can have, one letter each (`code_tokens`), the level collision resolution may add included."""


def level_prefix(side: str, level: int) -> str:
    """The token prefix of code `level` (from 0) of `side`: its letter for "item", u and its letter for "user"."""
    return ("" if side == "item" else "u") + string.ascii_lowercase[level]


def code_tokens(codes: np.ndarray, side: str) -> list[list[str]]:
    """Token strings of a code table: level l of items is `<{letter}_{code}>`, of users `<u{letter}_{code}>`."""
    letters = [level_prefix(side, level) for level in range(codes.shape[1])]
    return [[f"<{letters[level]}_{int(c)}>" for level, c in enumerate(row)] for row in codes]


def level_token(side: str, level: int) -> re.Pattern[str]:
    """What `code_tokens` writes at `level` of `side` (a code without leading zeros: `<a_07>` would be another
    vocabulary token than `<a_7>`), the code its group; for `fullmatch`."""
    return re.compile(f"<{level_prefix(side, level)}_(0|[1-9][0-9]*)>")


def _token_key(token: str) -> tuple[str, int]:
    match = TOKEN.match(token)
    return (match.group(1), int(match.group(2))) if match else (token, -1)


def scid_tokens(item_codes: Mapping[str, Sequence[str]], user_codes: Mapping[str, Sequence[str]]) -> list[str]:
    """Every distinct code token, item tokens first, each side ordered by level prefix then code number."""
    items = sorted({t for codes in item_codes.values() for t in codes}, key=_token_key)
    users = sorted({t for codes in user_codes.values() for t in codes} - set(items), key=_token_key)
    return items + users
