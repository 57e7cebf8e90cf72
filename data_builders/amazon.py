"""Amazon Reviews 2014 and 2018 (McAuley et al.): a reviews file plus a `meta_*` metadata file, `.json` or
`.json.gz`, one object per line (2014 metadata lines are Python dict literals, also accepted).

Reviews give `reviewerID`, `asin`, `unixReviewTime` (or `reviewTime` "MM D, YYYY"), `overall` and the review
text (`summary` + `reviewText`). Metadata gives the title, description, brand, category path and price. HTML tags
are stripped, entities unescaped, and the tags that unescaping makes stripped too. Items without metadata, or whose
metadata has no title, are dropped (counted in `meta.json`); a repeated `asin` in the metadata keeps its first record
with a title, since the public files have repeats.

Both files are streamed: interactions are kept as compact columns and review text is spooled to disk, and only
the metadata of items that occur in the reviews is kept, so memory does not grow with the raw file size.
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from align3gr.data.builder import Builder, RawData, identifier
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item
from align3gr.errors import DataError
from align3gr.io import iter_json_lines

_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
"""An HTML comment or tag: `<` or `</` then a letter, so a text's own "<" ("32 < 55 inch") is kept."""
_PRICE = re.compile(r"\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)")
JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
SENTENCE_ENDS = ".!?…"


def clean_html(text: object) -> str:
    """Drop tags, unescape entities, then drop the tags that unescaping made (double-escaped markup, "&lt;br /&gt;";
    an escaped "&lt;3" stays text), collapse whitespace; non-strings (None, numbers) become ''."""
    if not isinstance(text, str):
        return ""
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


def parse_price(value: object) -> float | None:
    """2014 prices are numbers; 2018 prices are strings like '$12.99' or '$10.00 - $20.00' (the first is kept). A
    negative price, or one beyond the float range (which JSON cannot write), is no price."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            price = float(value)
        except OverflowError:
            return None
    else:
        match = _PRICE.search(value) if isinstance(value, str) else None
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


def item_from_metadata(asin: str, meta: dict) -> Item | None:
    """The item of one metadata record, or None when it has no usable title."""
    title = clean_html(meta.get("title"))
    if not title:
        return None
    description = meta.get("description")
    if isinstance(description, list):
        description = " ".join(d for d in description if isinstance(d, str))
    attributes: dict[str, object] = {}
    brand = clean_html(meta.get("brand"))
    if brand:
        attributes["brand"] = brand
    price = parse_price(meta.get("price"))
    if price is not None:
        attributes["price"] = price
    return Item(asin, title, clean_html(description), category_path(meta), attributes)


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


class AmazonBuilder(Builder):
    """Amazon Reviews 2014 / 2018 (reviews + metadata)."""

    name = "amazon"
    version = "3"
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
        for line, review in iter_json_lines(reviews_path):
            if "reviewerID" not in review or "asin" not in review or review.get("overall") is None:
                field = next(f for f in ("reviewerID", "asin", "overall") if review.get(f) is None)
                raise DataError(f"missing required field '{field}' (or it is null)", reviews_path, line)
            user, item = review["reviewerID"], review["asin"]
            if type(user) is not str or type(item) is not str:
                user, item = (
                    identifier(review, "reviewerID", reviews_path, line),
                    identifier(review, "asin", reviews_path, line),
                )
            text = review_text(clean_html(review.get("summary")), clean_html(review.get("reviewText")))
            timestamp = review_time(review, reviews_path, line)
            add(user, item, timestamp, review["overall"], text, line=line)
        wanted = set(interactions.item_ids)
        items: dict[str, Item] = {}
        for line, meta in iter_json_lines(meta_path, allow_python_literals=True):
            if "asin" not in meta:
                raise DataError("missing required field 'asin'", meta_path, line)
            asin = identifier(meta, "asin", meta_path, line)
            if asin in wanted and asin not in items:
                item = item_from_metadata(asin, meta)
                if item is not None:
                    items[asin] = item
        return RawData(interactions, items)
