"""The code tables `item_codes.json` and `user_codes.json`: their names, writing them, and reading them with the
checks every later stage relies on."""

from __future__ import annotations

from pathlib import Path

from align3gr.data.dataset import Dataset
from align3gr.errors import DataError
from align3gr.io import read_json, write_json
from align3gr.scid.tokens import TOKEN

ITEM_CODES = "item_codes.json"
USER_CODES = "user_codes.json"
CODE_TABLES = (ITEM_CODES, USER_CODES)


def write_code_tables(folder: Path, items: dict[str, list[str]], users: dict[str, list[str]]) -> None:
    """Write `{item: [tokens]}` and `{user: [tokens]}` (empty: item-only SCIDs) into `folder`."""
    write_json(folder / ITEM_CODES, items)
    write_json(folder / USER_CODES, users)


def check_table(table: object, ids: list[str] | None, path: Path, unique: bool) -> dict[str, list[str]]:
    """The table as a dict, or a DataError naming the first ID or code that does not fit the dataset's `ids`
    (not compared when None) or the token format."""
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
    length = None
    for key, codes in table.items():
        if not isinstance(codes, list) or not all(isinstance(c, str) and TOKEN.match(c) for c in codes):
            raise DataError(f"'{key}': expected a list of tokens like \"<a_12>\", got {codes!r}", path)
        if length is None:
            length = len(codes)
        elif len(codes) != length:
            raise DataError(f"'{key}' has {len(codes)} codes; the others have {length}", path)
    if unique and len({tuple(c) for c in table.values()}) != len(table):
        first: dict[tuple[str, ...], str] = {}
        for key, codes in table.items():
            other = first.setdefault(tuple(codes), key)
            if other != key:
                shared = "".join(codes)
                raise DataError(f"items '{other}' and '{key}' share the code {shared}; item codes must be unique", path)
    return table


def code_length(table: dict[str, list[str]]) -> int:
    """The number of codes of each ID of a checked table (`check_table`: one length for all); 0 when it is empty."""
    return len(next(iter(table.values()), []))


def load_code_tables(
    scid_dir: str | Path, dataset: Dataset | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(item codes, user codes) of `scid_dir`, checked, and against `dataset`'s IDs when given (a published model
    has no dataset); user codes may be empty: item-only."""
    folder = Path(scid_dir)
    item_ids, user_ids = (None, None) if dataset is None else (list(dataset.items), list(dataset.sequences))
    items = check_table(read_json(folder / ITEM_CODES), item_ids, folder / ITEM_CODES, True)
    users = read_json(folder / USER_CODES)
    if users:
        users = check_table(users, user_ids, folder / USER_CODES, False)
    return items, users
