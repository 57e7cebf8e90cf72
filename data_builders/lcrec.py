"""The LC-Rec / LETTER exchange format, read and written.

A dataset X is a folder holding:
- `X.inter.json`: `{user_index: [item_index, ...]}`, chronological; no timestamps (positions are used);
- `X.item.json`: `{item_index: {"title", "description" (string or list), "brand", "categories" (string with
  commas, or list), ...}}`; other keys go to the item's attributes;
- `X.index.json` (optional): `{item_index: ["<a_12>", "<b_3>", ...]}`, precomputed semantic IDs, kept in each
  item's `attributes["lcrec_index"]`;
- `X.user.json` (optional), in any of these shapes: `{user_index: "profile"}`, `{user_index: {"profile": ...}}`,
  or LC-Rec's `{"user_explicit_preference": {user_index: text or [texts]}, "user_vague_intention": ...}`
  (the vague intentions are not read);
- `X.id_map.json` (written by our exporter): the original user and item IDs, and the category lists a comma-joined
  string would split differently ("Clothing, Shoes & Jewelry"), restored on reading.

LC-Rec data is usually already 5-core and split; the canonical filters still apply (`--user-k 3 --item-k 1`
keeps such data as it is).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from align3gr.data.builder import Builder, RawData, missing
from align3gr.data.dataset import Dataset
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item, User
from align3gr.errors import DataError
from align3gr.io import fsync_folder, fsync_tree, owned_name, read_json, remove_stale_temporaries, write_json

ITEM_TEXT_FIELDS = ("title", "description", "categories")
EXPORT_KINDS = ("inter", "item", "user", "id_map", "index")


def _mapping(value: object, path: Path, what: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object of {what}, got {type(value).__name__}", path)
    return value


def _text(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(v).strip() for v in value if not missing(v) and str(v).strip())
    return "" if missing(value) else str(value).strip()


def _categories(value: object) -> list[str]:
    parts = value if isinstance(value, list) else str(value or "").split(",")
    return [str(p).strip() for p in parts if str(p).strip()]


def parse_item(key: str, record: object, path: Path) -> Item:
    if not isinstance(record, dict):
        raise DataError(f"item '{key}': expected an object with a title", path)
    title = _text(record.get("title"))
    if not title:
        raise DataError(f"item '{key}': missing required field 'title'", path)
    attributes = {k: v for k, v in record.items() if k not in ITEM_TEXT_FIELDS and not missing(v)}
    return Item(key, title, _text(record.get("description")), _categories(record.get("categories")), attributes)


def parse_profiles(document: object, path: Path) -> dict[str, str]:
    """User profiles from any of the accepted `X.user.json` shapes."""
    document = _mapping(document, path, "users")
    if "user_explicit_preference" in document:
        document = _mapping(document["user_explicit_preference"], path, "explicit preferences")
    profiles = {}
    for key, value in document.items():
        text = _text(value.get("profile") if isinstance(value, dict) else value)
        if isinstance(value, dict) and "profile" not in value:
            raise DataError(f"user '{key}': expected a profile string or an object with 'profile'", path)
        profiles[str(key)] = text
    return profiles


def parse_id_map(document: object, path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """The original user and item IDs of `X.id_map.json` (`{"users": {index: ID}, "items": {index: ID}}`) and its
    exact category lists (`"categories": {index: [category, ...]}`, where a comma-joined string would not do)."""
    document = _mapping(document, path, "'users' and 'items' ID maps")
    maps = []
    for kind in ("users", "items"):
        mapping = _mapping(document.get(kind, {}), path, f"{kind} IDs")
        bad = next((k for k, v in mapping.items() if not isinstance(v, str) or not v), None)
        if bad is not None:
            raise DataError(f"{kind} index '{bad}': expected the original ID as a string, got {mapping[bad]!r}", path)
        maps.append(mapping)
    categories = _mapping(document.get("categories", {}), path, "category lists")
    listed = {k: isinstance(v, list) and all(isinstance(c, str) for c in v) for k, v in categories.items()}
    bad = next((k for k, ok in listed.items() if not ok), None)
    if bad is not None:
        raise DataError(f"categories of item index '{bad}': expected a list of strings", path)
    return maps[0], maps[1], categories


class LCRecBuilder(Builder):
    """LC-Rec / LETTER `X.*.json` folders."""

    name = "lcrec"
    version = "2"
    option_names = ("name",)

    def files(self, source: Path) -> dict[str, Path]:
        folder = self.folder_of(source)
        if "name" in self.options:
            stem = self.options["name"]
        elif source.is_file() and source.name.endswith(".inter.json"):
            stem = source.name.removesuffix(".inter.json")
        else:
            found = sorted(p.name.removesuffix(".inter.json") for p in folder.glob("*.inter.json"))
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                raise DataError(f"expected one X.inter.json (or --option name=X); found datasets: {listed}", folder)
            stem = found[0]
        files = {kind: folder / f"{stem}.{kind}.json" for kind in ("inter", "item", "index", "user", "id_map")}
        for kind in ("inter", "item"):
            if not files[kind].is_file():
                raise DataError("file not found", files[kind])
        return {kind: path for kind, path in files.items() if path.is_file()}

    def sources(self, source: Path) -> list[Path]:
        return list(self.files(source).values())

    def read(self, source: Path) -> RawData:
        files = self.files(source)
        users_back, items_back, categories = (
            parse_id_map(read_json(files["id_map"]), files["id_map"]) if "id_map" in files else ({}, {}, {})
        )
        inter = _mapping(read_json(files["inter"]), files["inter"], "users to item lists")
        interactions = InteractionLog(files["inter"])
        for user, sequence in inter.items():
            if not isinstance(sequence, list) or not all(type(i) in (int, str) for i in sequence):  # not true/false
                raise DataError(f"user '{user}': expected a list of item indices", files["inter"])
            for position, item in enumerate(sequence):
                interactions.add(users_back.get(str(user), str(user)), items_back.get(str(item), str(item)), position)
        records = _mapping(read_json(files["item"]), files["item"], "items")
        items = {items_back.get(k, k): parse_item(items_back.get(k, k), v, files["item"]) for k, v in records.items()}
        for key, exact in categories.items():
            if items_back.get(key, key) in items:
                items[items_back.get(key, key)].categories = list(exact)
        if "index" in files:
            for key, codes in _mapping(read_json(files["index"]), files["index"], "item codes").items():
                if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
                    raise DataError(f"item '{key}': expected a list of code strings", files["index"])
                if items_back.get(key, key) in items:
                    items[items_back.get(key, key)].attributes["lcrec_index"] = codes
        users = {}
        if "user" in files:
            for key, profile in parse_profiles(read_json(files["user"]), files["user"]).items():
                users[users_back.get(key, key)] = User(users_back.get(key, key), profile)
        return RawData(interactions, items, users)


def export_lcrec(
    dataset: Dataset,
    out: str | Path,
    name: str,
    item_codes: dict[str, list[str]] | None = None,
    codes_path: str | Path | None = None,
) -> list[Path]:
    """Write `dataset` as LC-Rec files `name.*.json` in `out` (users and items re-indexed from 0 in dataset
    order, as LC-Rec expects; `name.id_map.json` maps them back). Files are written beside and then renamed into
    place, so other files in `out` are left alone and no half-written file appears; LC-Rec files of that name that
    no export wrote (the dataset's source files) are refused, not replaced. Codes come from `item_codes` (the
    `scid/item_codes.json` table, read from `codes_path`) or from items' `lcrec_index` attributes when every item
    has one; a code table of an earlier export under the same name is removed when this one writes none.
    `X.user.json` holds the built profiles (the source's sentence, then the data build's): a build from the export
    takes them as its source profiles and adds its own sentences after them."""
    item_index = {item_id: str(k) for k, item_id in enumerate(dataset.items)}
    user_index = {user_id: str(k) for k, user_id in enumerate(dataset.sequences)}
    if item_codes is None and all("lcrec_index" in item.attributes for item in dataset.items.values()):
        item_codes = {i: item.attributes["lcrec_index"] for i, item in dataset.items.items()}
    if item_codes is not None:
        if not isinstance(item_codes, dict) or not all(
            isinstance(codes, list) and all(isinstance(c, str) for c in codes) for codes in item_codes.values()
        ):
            raise DataError("expected an item code table: {item ID: [code strings]}", codes_path)
        missing = [i for i in dataset.items if i not in item_codes]
        if missing:
            raise DataError(
                f"item '{missing[0]}' has no code in the item code table ({len(missing)} missing)", codes_path
            )
    documents = {
        "inter": {user_index[u]: [int(item_index[i]) for i in s.items] for u, s in dataset.sequences.items()},
        "item": {item_index[i]: _item_record(item) for i, item in dataset.items.items()},
        "user": {user_index[u]: dataset.users[u].profile for u in dataset.sequences},
        "id_map": {
            "users": {v: k for k, v in user_index.items()},
            "items": {v: k for k, v in item_index.items()},
            "categories": {
                item_index[i]: item.categories
                for i, item in dataset.items.items()
                if _categories(",".join(item.categories)) != item.categories
            },
        },
    }
    if item_codes is not None:
        documents["index"] = {item_index[i]: list(item_codes[i]) for i in dataset.items}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("the export folder is a file; give a folder", out)
    present = [kind for kind in EXPORT_KINDS if (out / f"{name}.{kind}.json").is_file()]
    if present and not (out / f"{name}.id_map.json").is_file():  # only an export writes an id map
        raise DataError(
            f"holds LC-Rec files {name}.{{{','.join(present)}}}.json that no export wrote (no {name}.id_map.json), "
            "which this export would replace: choose another --out or --name",
            out,
        )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out / name)
    tmp = out / owned_name(out / name, "tmp")
    tmp.mkdir()
    try:
        for kind, document in documents.items():
            write_json(tmp / f"{name}.{kind}.json", document)
        fsync_tree(tmp)
        for kind in documents:
            os.replace(tmp / f"{name}.{kind}.json", out / f"{name}.{kind}.json")
        for kind in EXPORT_KINDS:  # a code table of an earlier export would otherwise be read with these items
            if kind not in documents:
                (out / f"{name}.{kind}.json").unlink(missing_ok=True)
        fsync_folder(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / f"{name}.{kind}.json" for kind in documents]


def _item_record(item: Item) -> dict:
    record = {"title": item.title, "description": item.description, "categories": ",".join(item.categories)}
    record.update({k: v for k, v in item.attributes.items() if k != "lcrec_index"})
    return record
