"""The code tables `item_codes.json` and `user_codes.json`: their names, writing them, and reading them with the
checks every later stage relies on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path

from align3gr.data.dataset import Dataset
from align3gr.errors import DataError
from align3gr.io import read_json, read_json_object, write_json
from align3gr.scid.tokens import MAX_LEVELS, level_prefix, level_token

ITEM_CODES = "item_codes.json"
USER_CODES = "user_codes.json"
CODE_TABLES = (ITEM_CODES, USER_CODES)
TOKENIZER_REPORTS = ("report.json", "tokenizer_report.json")
"""The tokenizer's report beside the code tables, in a run's scid/ and in a pushed folder: its config declares the
codebook sizes (sft/ and dpo/ folders hold copies of tables checked against it when read from scid/)."""


def write_code_tables(folder: Path, items: dict[str, list[str]], users: dict[str, list[str]]) -> None:
    """Write `{item: [tokens]}` and `{user: [tokens]}` (empty: item-only SCIDs) into `folder`."""
    write_json(folder / ITEM_CODES, items)
    write_json(folder / USER_CODES, users)


def declared_sizes(folder: Path) -> dict[str, list[int]]:
    """Codes per level of each side ("item", "user") that the tokenizer report in `folder` declares: its config's
    `codebook_size` (`user_codebook_size`) for each of its `levels`, none for the disambiguation level the items may
    add; {} without a report or without these in its config (a report written by hand)."""
    reports = [folder / name for name in TOKENIZER_REPORTS if (folder / name).is_file()]
    config = read_json_object(reports[0]).get("config") if reports else None
    keys = ("levels", "codebook_size", "user_codebook_size")
    if not isinstance(config, dict) or not all(type(config.get(key)) is int for key in keys):
        return {}
    levels = config["levels"]
    return {"item": [config["codebook_size"]] * levels, "user": [config["user_codebook_size"]] * levels}


def check_table(
    table: object, ids: list[str] | None, path: Path, side: str, sizes: Sequence[int] = ()
) -> dict[str, list[str]]:
    """The table of `side` ("item" or "user") as a dict, or a DataError naming the first ID or code that does not
    fit the dataset's `ids` (not compared when None) or the tokens of `side`: one per level, of the level's prefix,
    its code below the level's size in `sizes` (no bound past its end); with `sizes`, as many levels as they give
    (items: or one more, the disambiguation level); item codes must be unique."""
    if not isinstance(table, dict):
        raise DataError("expected a JSON object {id: [tokens]}", path)
    if ids is not None:
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataError(
                f"no code for '{missing[0]}' ({len(missing)} of {len(ids)} IDs of the dataset missing)", path
            )
        extra = sorted(set(table) - set(ids))
        if extra:
            raise DataError(
                f"'{extra[0]}' is not in the dataset ({len(extra)} unknown IDs): built for another dataset?", path
            )
    length = _common_length(table, path, side)
    if table and sizes and length not in ((len(sizes), len(sizes) + 1) if side == "item" else (len(sizes),)):
        extra = " (items: or one more, telling apart items of equal codes)" if side == "item" else ""
        raise DataError(
            f"{length} codes per {side}; the tokenizer report declares {len(sizes)} levels{extra}: a table of "
            "another tokenizer?",
            path,
        )
    for level in range(length):
        _check_level(table, path, side, level, sizes[level] if level < len(sizes) else None)
    if side == "item" and len({tuple(c) for c in table.values()}) != len(table):
        first: dict[tuple[str, ...], str] = {}
        for key, codes in table.items():
            other = first.setdefault(tuple(codes), key)
            if other != key:
                shared = "".join(codes)
                raise DataError(f"items '{other}' and '{key}' share the code {shared}; item codes must be unique", path)
    return table


def _common_length(table: dict, path: Path, side: str) -> int:
    """The number of codes of every entry, or a DataError naming the first entry that is not a list or has another
    number of codes than the first (the table when the number exceeds the token letters, `MAX_LEVELS`)."""
    if set(map(type, table.values())) - {list}:
        key = next(key for key, codes in table.items() if type(codes) is not list)
        example = f"<{level_prefix(side, 0)}_12>"
        raise DataError(f"{side} '{key}': expected a list of tokens like \"{example}\", got {table[key]!r}", path)
    length = code_length(table)
    if len(set(map(len, table.values()))) > 1:
        key = next(key for key, codes in table.items() if len(codes) != length)
        raise DataError(f"{side} '{key}' has {len(table[key])} codes; the others have {length}", path)
    if length > MAX_LEVELS:
        raise DataError(f"{length} codes per {side}: the tokens have letters for {MAX_LEVELS} levels", path)
    return length


def _check_level(table: dict[str, list], path: Path, side: str, level: int, size: int | None) -> None:
    """A DataError naming the first entry whose token at `level` is not `level_token`'s with a code below `size`
    (any code when None). Each distinct token is matched once: fast, as a level has few among many entries."""
    pattern = level_token(side, level)
    try:
        fits = all(_fits(token, pattern, size) for token in set(map(itemgetter(level), table.values())))
    except TypeError:  # an unhashable token (a list or an object): not a token
        fits = False
    if not fits:
        key = next(key for key, codes in table.items() if not _fits(codes[level], pattern, size))
        bound = "" if size is None else f" below {size} (the tokenizer report's codebook size)"
        raise DataError(
            f"{side} '{key}' level {level}: expected a token `<{level_prefix(side, level)}_N>`, N a code{bound} "
            f"without leading zeros, got {table[key][level]!r}",
            path,
        )


def _fits(token: object, pattern: re.Pattern[str], size: int | None) -> bool:
    """Whether `token` is a string `pattern` matches whole with a code below `size` (any code when None)."""
    match = pattern.fullmatch(token) if isinstance(token, str) else None
    if match is None or size is None:
        return match is not None
    return len(match[1]) <= len(str(size)) and int(match[1]) < size  # no int() of thousands of digits


def code_length(table: dict[str, list[str]]) -> int:
    """The number of codes of each ID of a checked table (`check_table`: one length for all); 0 when it is empty."""
    return len(next(iter(table.values()), []))


def load_code_tables(
    scid_dir: str | Path, dataset: Dataset | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(item codes, user codes) of `scid_dir`, checked, against `dataset`'s IDs when given (a published model has no
    dataset) and the codebook sizes of the tokenizer report when there is one; user codes may be empty: item-only."""
    folder = Path(scid_dir)
    item_ids, user_ids = (None, None) if dataset is None else (list(dataset.items), list(dataset.sequences))
    sizes = declared_sizes(folder)
    items = check_table(read_json(folder / ITEM_CODES), item_ids, folder / ITEM_CODES, "item", sizes.get("item", ()))
    users = read_json(folder / USER_CODES)
    if users:
        users = check_table(users, user_ids, folder / USER_CODES, "user", sizes.get("user", ()))
    return items, users
