"""Yelp Open Dataset: `business.json` and `review.json` (one JSON object per line), optional `user.json`.

Items are businesses: the name as title, a sentence from city, state and categories as description, Yelp's
categories in their given order (they are tags, not a hierarchy), and city, state, stars and price range as
attributes. Reviews give user, business, stars, date ("YYYY-MM-DD HH:MM:SS", read as UTC) and text. With
`user.json`, users get `review_count`, `yelping_since` and `average_stars` as attributes. All files are streamed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from align3gr.data.builder import Builder, RawData, identifier, missing
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item, User
from align3gr.errors import DataError
from align3gr.io import iter_json_lines

USER_FIELDS = ("review_count", "yelping_since", "average_stars")


def parse_date(value: object, path: Path, line: int) -> int:
    """Yelp's 'YYYY-MM-DD HH:MM:SS' as UTC seconds."""
    try:
        moment = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise DataError(f"date {value!r}: expected 'YYYY-MM-DD HH:MM:SS'", path, line) from None
    return int(moment.replace(tzinfo=timezone.utc).timestamp())


def require(row: dict, fields: tuple[str, ...], path: Path, line: int) -> None:
    for name in fields:
        if row.get(name) in (None, ""):
            raise DataError(f"missing required field '{name}'", path, line)


def optional(row: dict, name: str, kind: type, path: Path, line: int) -> object:
    """An optional field: its value when of `kind`, None when absent or null, a DataError otherwise."""
    value = row.get(name)
    if value is None or isinstance(value, kind):
        return value
    raise DataError(f"field '{name}' must be a {kind.__name__} or null, got {type(value).__name__}", path, line)


def business_item(row: dict, path: Path, line: int) -> Item:
    categories = [c.strip() for c in (optional(row, "categories", str, path, line) or "").split(",") if c.strip()]
    city, state = optional(row, "city", str, path, line), optional(row, "state", str, path, line)
    place = ", ".join(p for p in (city, state) if p)
    description = f"{row['name']}" + (f" in {place}" if place else "")
    description += f". Categories: {', '.join(categories)}." if categories else "."
    attributes = {k: row[k] for k in ("city", "state", "stars") if not missing(row.get(k)) and row[k] != ""}
    price_range = (optional(row, "attributes", dict, path, line) or {}).get("RestaurantsPriceRange2")
    if isinstance(price_range, str) and price_range.isdecimal():
        attributes["price_range"] = int(price_range)
    return Item(
        identifier(row, "business_id", path, line), str(row["name"]).strip(), description, categories, attributes
    )


class YelpBuilder(Builder):
    """Yelp Open Dataset (business + review, optional user)."""

    name = "yelp"
    version = "2"

    def _files(self, source: Path) -> dict[str, Path]:
        folder = self.folder_of(source)
        found = {}
        for kind in ("business", "review", "user"):
            matches = sorted(folder.glob(f"*{kind}.json")) + sorted(folder.glob(f"*{kind}.json.gz"))
            if len(matches) > 1:
                raise DataError(f"several {kind} files: {', '.join(p.name for p in matches)}", folder)
            if matches:
                found[kind] = matches[0]
        for kind in ("business", "review"):
            if kind not in found:
                raise DataError(f"no {kind}.json (or yelp_academic_dataset_{kind}.json) found", folder)
        return found

    def sources(self, source: Path) -> list[Path]:
        return list(self._files(source).values())

    def read(self, source: Path) -> RawData:
        files = self._files(source)
        items: dict[str, Item] = {}
        for line, row in iter_json_lines(files["business"]):
            require(row, ("business_id", "name"), files["business"], line)
            item = business_item(row, files["business"], line)
            if item.item_id in items:
                raise DataError(f"duplicate business_id '{item.item_id}'", files["business"], line)
            items[item.item_id] = item
        interactions = InteractionLog(files["review"], with_reviews=True)
        for line, row in iter_json_lines(files["review"]):
            require(row, ("user_id", "business_id", "stars", "date"), files["review"], line)
            timestamp = parse_date(row["date"], files["review"], line)
            text = " ".join(str(row.get("text") or "").split())
            user, item = (
                identifier(row, "user_id", files["review"], line),
                identifier(row, "business_id", files["review"], line),
            )
            interactions.add(user, item, timestamp, row["stars"], text, line=line)
        users: dict[str, User] = {}
        if "user" in files:
            wanted = set(interactions.user_ids)
            for line, row in iter_json_lines(files["user"]):
                require(row, ("user_id",), files["user"], line)
                user = identifier(row, "user_id", files["user"], line)
                if user in wanted and user not in users:
                    attributes = {k: row[k] for k in USER_FIELDS if k in row}
                    users[user] = User(user, "", attributes)
        return RawData(interactions, items, users)
