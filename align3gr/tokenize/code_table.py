"""Reading the code tables of `scid/` for a dataset, with the checks every later stage relies on."""

from __future__ import annotations

import re
from pathlib import Path

from align3gr.data.dataset import Dataset
from align3gr.errors import DataError
from align3gr.io import read_json

_TOKEN = re.compile(r"^<[a-z]+_\d+>$")


def check_table(table: object, ids: list[str], path: Path, unique: bool) -> dict[str, list[str]]:
    """The table as a dict, or a DataError naming the first ID or code that does not fit the dataset."""
    if not isinstance(table, dict):
        raise DataError("expected a JSON object {id: [tokens]}", path)
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(f"no code for '{missing[0]}' ({len(missing)} of {len(ids)} IDs of the dataset missing)", path)
    extra = sorted(set(table) - set(ids))
    if extra:
        raise DataError(
            f"'{extra[0]}' is not in the dataset ({len(extra)} unknown IDs): built for another dataset?", path
        )
    length = None
    for key, codes in table.items():
        if not isinstance(codes, list) or not all(isinstance(c, str) and _TOKEN.match(c) for c in codes):
            raise DataError(f"'{key}': expected a list of tokens like \"<a_12>\", got {codes!r}", path)
        if length is None:
            length = len(codes)
        elif len(codes) != length:
            raise DataError(f"'{key}' has {len(codes)} codes; the others have {length}", path)
    if unique and len({tuple(c) for c in table.values()}) != len(table):
        raise DataError("two items share a full code; item codes must be unique", path)
    return table


def load_code_tables(scid_dir: str | Path, dataset: Dataset) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(item codes, user codes) of `scid_dir`, checked against `dataset` (user codes may be empty: item-only)."""
    folder = Path(scid_dir)
    items = check_table(read_json(folder / "item_codes.json"), list(dataset.items), folder / "item_codes.json", True)
    users = read_json(folder / "user_codes.json")
    if users:
        users = check_table(users, list(dataset.sequences), folder / "user_codes.json", False)
    return items, users
