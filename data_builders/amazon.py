"""Amazon Reviews 2014, 2018 (McAuley et al.) and 2023 (Hou et al.): a reviews file plus a `meta_*` metadata file,
`.json(l)` or gzipped, one object per line (2014 metadata lines are Python dict literals, also accepted).

2014 / 2018 reviews give `reviewerID`, `asin`, `unixReviewTime` (or `reviewTime` "MM D, YYYY"), `overall` and the
review text (`summary` + `reviewText`); 2023 reviews give `user_id`, `parent_asin` (the item: a product's variants are
one item, as the 2023 benchmarks count them), `timestamp` (milliseconds, kept as given: only the order is used),
`rating` and `title` + `text`. The reviews file's first record tells the layout; every record must follow it.
Metadata gives the title, description, brand, category path and price (2023: keyed by `parent_asin`, `features` when
there is no description, `store` or `details.Brand` as the brand, `main_category` when `categories` is empty). HTML
tags are stripped, entities unescaped, and the tags that unescaping makes stripped too. Items without metadata, or
whose metadata has no title, are dropped (counted in `meta.json`); a repeated item in the metadata keeps its first
record with a title, since the public files have repeats.

Both files are streamed: interactions are kept as compact columns and review text is spooled to disk, and only
the metadata of items that occur in the reviews is kept, so memory does not grow with the raw file size.
"""

from __future__ import annotations

import html
import itertools
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from align3gr.data.builder import Builder, RawData, identifier
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item
from align3gr.data.texts import SENTENCE_ENDS
from align3gr.errors import DataError
from align3gr.io import iter_json_lines

log = logging.getLogger(__name__)
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
"""An HTML comment or tag: `<` or `</` then a letter, so a text's own "<" ("32 < 55 inch") is kept."""
_PRICE = re.compile(r"\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)")
_BARE_PRICE = re.compile(r"([0-9][0-9,]*(?:\.[0-9]+)?)")
JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def clean_html(text: object) -> str:
    """Drop tags, unescape entities, then drop the tags that unescaping made (double-escaped markup, "&lt;br /&gt;";
    an escaped "&lt;3" stays text), collapse whitespace; a number is its text (the title 1984), anything else that
    is not a string (None, NaN, lists, true) ''."""
    if not isinstance(text, str):
        return str(text) if type(text) is int or (type(text) is float and math.isfinite(text)) else ""
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
        if "<" in text:
            text = _TAG.sub(" ", text)
    if "  " not in text and text[:1] != " " and text[-1:] != " " and text.isprintable():
        return text  # already collapsed: its only whitespace is single inner spaces (other whitespace is unprintable)
    return " ".join(text.split())


def review_text(summary: str, body: str) -> str:
    """The review's summary and body as one text: "Five stars. Works well", "Works great! Loud", not "great!."."""
    if summary and body:
        return f"{summary} {body}" if summary[-1] in SENTENCE_ENDS else f"{summary}. {body}"
    return summary or body


def parse_price(value: object, bare_numbers: bool = False) -> float | None:
    """2014 and 2023 prices are numbers; 2018 prices are strings like '$12.99' or '$10.00 - $20.00' (the first is
    kept); with `bare_numbers` (2023, whose exports also write '12.99' and 'None') a string that is a number too. A
    negative price, or one beyond the float range (which JSON cannot write), is no price."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            price = float(value)
        except OverflowError:
            return None
    else:
        match = _PRICE.search(value) if isinstance(value, str) else None
        if match is None:
            match = _BARE_PRICE.fullmatch(value.strip()) if bare_numbers and isinstance(value, str) else None
            if match is None:
                return None
        price = float(match.group(1).replace(",", ""))
    return price if 0 <= price < math.inf else None


def category_path(meta: dict) -> list[str]:
    """Coarse-to-fine categories: 2014 `categories` is a list of paths (the first is taken), 2018 `category` a path."""
    raw = meta.get("categories")
    if isinstance(raw, list) and raw and isinstance(raw[0], list):
        raw = raw[0]
    elif not isinstance(raw, list):
        raw = meta.get("category")
    if not isinstance(raw, list):
        return []
    return [c for c in (clean_html(v) for v in raw) if c]


def joined(value: object) -> object:
    """A description given as a list of paragraphs, as one text (other values unchanged, for `clean_html`)."""
    return " ".join(d for d in value if isinstance(d, str)) if isinstance(value, list) else value


def item_from_metadata(asin: str, meta: dict) -> Item | None:
    """The item of one 2014 / 2018 metadata record, or None when it has no usable title."""
    title = clean_html(meta.get("title"))
    if not title:
        return None
    return Item(asin, title, clean_html(joined(meta.get("description"))), category_path(meta),
                attributes(clean_html(meta.get("brand")), parse_price(meta.get("price"))))  # fmt: skip


def item_from_metadata_2023(asin: str, meta: dict) -> Item | None:
    """The item of one 2023 metadata record (see the module's docstring), or None when it has no usable title."""
    title = clean_html(meta.get("title"))
    if not title:
        return None
    description = clean_html(joined(meta.get("description"))) or clean_html(joined(meta.get("features")))
    categories = category_path(meta) or [c for c in (clean_html(meta.get("main_category")),) if c]
    details = meta.get("details")
    brand = clean_html(meta.get("store")) or clean_html(details.get("Brand") if isinstance(details, dict) else None)
    return Item(asin, title, description, categories, attributes(brand, parse_price(meta.get("price"), True)))


def attributes(brand: str, price: float | None) -> dict[str, object]:
    """The item attributes Amazon metadata gives: the brand and price, when known."""
    found: dict[str, object] = {"brand": brand} if brand else {}
    if price is not None:
        found["price"] = price
    return found


def review_time(review: dict, path: Path, line: int) -> object:
    """`unixReviewTime`, or `reviewTime` ("09 13, 2009") as UTC seconds."""
    if "unixReviewTime" in review:
        return review["unixReviewTime"]
    if "reviewTime" not in review:
        raise DataError("missing required field 'unixReviewTime' (or 'reviewTime')", path, line)
    try:
        moment = datetime.strptime(str(review["reviewTime"]).strip(), "%m %d, %Y")
    except ValueError:
        raise DataError(f"reviewTime {review['reviewTime']!r}: expected 'MM D, YYYY'", path, line) from None
    return int(moment.replace(tzinfo=timezone.utc).timestamp())


def review_time_2023(review: dict, path: Path, line: int) -> object:
    """`timestamp`, in milliseconds."""
    if review.get("timestamp") is None:
        raise DataError("missing required field 'timestamp' (or it is null)", path, line)
    return review["timestamp"]


@dataclass(frozen=True)
class Layout:
    """The field names of one release's files, and how it gives the time and the metadata."""

    name: str
    user: str
    item: str
    rating: str
    summary: str
    body: str
    time: Callable[[dict, Path, int], object]
    item_of: Callable[[str, dict], Item | None]


LAYOUT_2018 = Layout("2014/2018", "reviewerID", "asin", "overall", "summary", "reviewText", review_time,
                     item_from_metadata)  # fmt: skip
LAYOUT_2023 = Layout("2023", "user_id", "parent_asin", "rating", "title", "text", review_time_2023,
                     item_from_metadata_2023)  # fmt: skip


def layout_of(first: dict) -> Layout:
    """The release of a reviews file, from its first record: 2023 names the user `user_id`, the others `reviewerID`."""
    return LAYOUT_2023 if "user_id" in first and "reviewerID" not in first else LAYOUT_2018


class AmazonBuilder(Builder):
    """Amazon Reviews 2014 / 2018 / 2023 (reviews + metadata)."""

    name = "amazon"
    version = "4"
    missing_metadata = "drop"
    option_names = ("reviews", "meta")

    def sources(self, source: Path) -> list[Path]:
        """[reviews file, metadata file], from the options, the folder, or the reviews file's folder."""
        reviews = Path(self.options["reviews"]) if "reviews" in self.options else None
        meta = Path(self.options["meta"]) if "meta" in self.options else None
        if reviews is None and source.is_file():
            reviews = source
        if meta is None or reviews is None:
            folder = self.folder_of(source)
            candidates = sorted(p for p in folder.iterdir() if p.name.endswith(JSON_SUFFIXES))
            if meta is None:
                metas = [p for p in candidates if p.name.startswith("meta_")]
                meta = self._only(metas, folder, "metadata file (meta_*)")
            if reviews is None:
                others = [p for p in candidates if not p.name.startswith("meta_")]
                reviews = self._only(others, folder, "reviews file")
        for path in (reviews, meta):
            if not path.is_file():
                raise DataError("file not found", path)
        return [reviews, meta]

    @staticmethod
    def _only(paths: list[Path], folder: Path, what: str) -> Path:
        if len(paths) != 1:
            found = ", ".join(p.name for p in paths) or "none"
            raise DataError(f"expected exactly one {what} (.json, .jsonl or gzipped), found: {found}", folder)
        return paths[0]

    def read(self, source: Path) -> RawData:
        reviews_path, meta_path = self.sources(source)
        interactions = InteractionLog(reviews_path, with_reviews=True)
        add = interactions.add
        records = iter_json_lines(reviews_path)
        first = next(records, None)
        layout = LAYOUT_2018 if first is None else layout_of(first[1])
        user_key, item_key, rating_key, summary_key, body_key = (
            layout.user, layout.item, layout.rating, layout.summary, layout.body
        )  # fmt: skip
        time_of = layout.time
        for line, review in itertools.chain([first] if first else [], records):
            if user_key not in review or item_key not in review or review.get(rating_key) is None:
                field = next(f for f in (user_key, item_key, rating_key) if review.get(f) is None)
                message = f"missing required field '{field}' (or it is null); the file's first record is in the Amazon"
                raise DataError(f"{message} {layout.name} layout", reviews_path, line)
            user, item = review[user_key], review[item_key]
            if type(user) is not str or type(item) is not str:
                user, item = (
                    identifier(review, user_key, reviews_path, line),
                    identifier(review, item_key, reviews_path, line),
                )
            text = review_text(clean_html(review.get(summary_key)), clean_html(review.get(body_key)))
            timestamp = time_of(review, reviews_path, line)
            add(user, item, timestamp, review[rating_key], text, line=line)
        wanted = set(interactions.item_ids)
        items: dict[str, Item] = {}
        untitled = 0
        for line, meta in iter_json_lines(meta_path, allow_python_literals=True):
            if item_key not in meta:
                raise DataError(f"missing required field '{item_key}' (Amazon {layout.name} metadata)", meta_path, line)
            asin = identifier(meta, item_key, meta_path, line)
            if asin in wanted and asin not in items:
                item = layout.item_of(asin, meta)
                if item is not None:
                    items[asin] = item
                else:
                    untitled += 1
        if untitled and not items:
            raise DataError(f"none of the {untitled} records of reviewed items has a 'title' with text: expected "
                            f"the Amazon {layout.name} metadata layout", meta_path)  # fmt: skip
        if untitled:
            log.info("%s: %d records of reviewed items have no title; their items count as without metadata",
                     meta_path, untitled)  # fmt: skip
        return RawData(interactions, items)
