"""MovieLens-100K and -1M, in GroupLens' own layout or RecBole's atomic files.

Layouts recognised in the `--source` folder:
- GroupLens ml-100k: `u.data` (tab-separated user, item, rating, timestamp), `u.item` (`|`-separated, genre flags
  named by `u.genre` or the documented order), `u.user` (`|`: id, age, gender, occupation, zip);
- GroupLens ml-1m: `ratings.dat`, `movies.dat`, `users.dat` (`::`-separated; age and occupation are codes);
- RecBole atomic files: `NAME.inter`, `NAME.item`, `NAME.user` (tab-separated, typed header `field:type`).
`--source recbole` finds ml-100k inside the installed `recbole` package without importing it (a folder named
`recbole` in the working folder is read instead, with a warning).

Items: title (article moved to the front, "Usual Suspects, The" -> "The Usual Suspects"), year, genres as
categories. Users: a profile sentence from age, gender and occupation.
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from align3gr.data.builder import Builder, RawData
from align3gr.data.config import PACKAGED_SOURCE
from align3gr.data.interactions import InteractionLog
from align3gr.data.schema import Item, User
from align3gr.errors import DataError
from align3gr.io import open_binary

log = logging.getLogger(__name__)

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
AGES_1M = {"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55", "56": "56+"}
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
GENDERS = {"M": "male", "F": "female"}
_YEAR_SUFFIX = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)(\s*\(.*\))?$")


def decode_line(raw: bytes) -> str:
    """A line of a GroupLens file: UTF-8, or Latin-1 where it is not (older GroupLens files are)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_rows(path: Path, separator: str, columns: int) -> Iterator[tuple[int, list[str]]]:
    """Yield `(line, fields)` of a delimited file (UTF-8, falling back to Latin-1 per line as GroupLens
    files need; a UTF-8 byte order mark at the start of the file skipped); a line with a different field count is a
    DataError naming file and line."""
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            text = decode_line(raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw).rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.split(separator)
            if len(fields) != columns:
                raise DataError(
                    f"expected {columns} fields separated by {separator!r}, found {len(fields)}", path, number
                )
            yield number, fields


def clean_title(raw: str) -> tuple[str, str | None]:
    """Split "Usual Suspects, The (1995)" into ("The Usual Suspects", "1995")."""
    raw = raw.strip()
    year = None
    match = _YEAR_SUFFIX.match(raw)
    if match:
        raw, year = match.group(1), match.group(2)
    article = _TRAILING_ARTICLE.match(raw)
    if article:
        glue = "" if article.group(2).endswith("'") else " "
        raw = f"{article.group(2)}{glue}{article.group(1)}{article.group(3) or ''}"
    return raw, year


def make_item(item_id: str, raw_title: str, genres: list[str], year: str | None = None) -> Item:
    title, title_year = clean_title(raw_title)
    year = year if year and year.isdecimal() else title_year
    description = f"{title}" + (f" ({year})" if year else "") + (f". Genres: {', '.join(genres)}." if genres else ".")
    attributes = {"year": int(year)} if year else {}
    return Item(item_id=item_id, title=title, description=description, categories=genres, attributes=attributes)


def profile_sentence(age: str, gender: str, occupation: str) -> str:
    """'A 24-year-old male technician.' from MovieLens user attributes (age may be a band like '25-34')."""
    age_text = f"{age}-year-old" if age.isdecimal() else f"aged {age}"
    who = " ".join(p for p in (GENDERS.get(gender, ""), occupation if occupation not in ("none", "other") else "") if p)
    who = who or "person"
    if age.isdecimal():
        article = "An" if age.startswith("8") or age in ("11", "18") else "A"
        return f"{article} {age_text} {who}."
    return f"A {who} {age_text}."


def make_user(user_id: str, age: str, gender: str, occupation: str, zip_code: str) -> User:
    attributes = {"age": age, "gender": gender, "occupation": occupation, "zip_code": zip_code}
    return User(user_id=user_id, profile=profile_sentence(age, gender, occupation), attributes=attributes)


def decode_1m(age: str, occupation: str, path: Path, line: int) -> tuple[str, str]:
    """ml-1m's age and occupation codes ("25", "12") as their meaning ("25-34", "programmer"), else a DataError."""
    if age not in AGES_1M or not occupation.isdecimal() or int(occupation) >= len(OCCUPATIONS_1M):
        raise DataError(
            f"unknown ml-1m age or occupation code (age {age!r}, occupation {occupation!r}; see the ml-1m README)",
            path,
            line,
        )
    return AGES_1M[age], OCCUPATIONS_1M[int(occupation)]


def add_unique(table: dict, key: str, value: object, path: Path, line: int, what: str) -> None:
    if key in table:
        raise DataError(f"duplicate {what} '{key}'", path, line)
    table[key] = value


class MovieLensBuilder(Builder):
    """MovieLens-100K / -1M from GroupLens or RecBole files (layout detected from the file names)."""

    name = "movielens"
    version = "1"

    def resolve(self, source: Path) -> tuple[str, dict[str, Path]]:
        """The layout name and its three files."""
        if str(source) == PACKAGED_SOURCE and source.exists():
            log.warning("reading the folder %s, not the recbole package's MovieLens-100K", source.resolve())
        elif str(source) == PACKAGED_SOURCE:
            spec = importlib.util.find_spec("recbole")
            if spec is None or spec.origin is None:
                raise DataError("package 'recbole' is not installed; run `pip install --no-deps recbole`", "recbole")
            source = Path(spec.origin).parent / "dataset_example" / "ml-100k"
        if not source.is_dir():
            raise DataError("expected a MovieLens folder (or 'recbole')", source)
        if (source / "u.data").is_file():
            return "grouplens-100k", {
                k: source / f for k, f in (("inter", "u.data"), ("item", "u.item"), ("user", "u.user"))
            }
        if (source / "ratings.dat").is_file():
            names = (("inter", "ratings.dat"), ("item", "movies.dat"), ("user", "users.dat"))
            return "grouplens-1m", {k: source / f for k, f in names}
        inter = sorted(source.glob("*.inter"))
        if len(inter) > 1:  # e.g. NAME.inter beside RecBole's split NAME.train.inter: the one named as the others
            named = [p for p in inter if p.with_suffix(".item").is_file() or p.with_suffix(".user").is_file()]
            if len(named) != 1:
                raise DataError(
                    f"several RecBole *.inter files ({', '.join(p.name for p in inter)}) and no single one named "
                    "like a .item or .user file beside it: keep one NAME.inter with NAME.item and NAME.user",
                    source,
                )
            inter = named
        if len(inter) == 1:
            stem = inter[0].with_suffix("")
            return "recbole", {k: stem.with_suffix(f".{k}") for k in ("inter", "item", "user")}
        raise DataError("no MovieLens files found: expected u.data, ratings.dat or one RecBole *.inter file", source)

    def sources(self, source: Path) -> list[Path]:
        _, files = self.resolve(source)
        missing = [p for p in files.values() if not p.is_file()]
        if missing:
            raise DataError("file not found (MovieLens needs interactions, items and users)", missing[0])
        return list(files.values())

    def read(self, source: Path) -> RawData:
        layout, files = self.resolve(source)
        reader = {"grouplens-100k": self._read_100k, "grouplens-1m": self._read_1m, "recbole": self._read_recbole}
        return reader[layout](files)

    def _read_100k(self, files: dict[str, Path]) -> RawData:
        interactions = InteractionLog(files["inter"])
        for line, (user, item, rating, timestamp) in read_rows(files["inter"], "\t", 4):
            interactions.add(user, item, timestamp, rating, line=line)
        genre_file = files["item"].with_name("u.genre")
        genres = [name for _, (name, _) in read_rows(genre_file, "|", 2)] if genre_file.is_file() else GENRES_100K
        items: dict[str, Item] = {}
        for line, fields in read_rows(files["item"], "|", 5 + len(genres)):
            flags = fields[5:]
            if any(flag not in ("0", "1") for flag in flags):
                raise DataError("genre flags must be 0 or 1", files["item"], line)
            chosen = [g for g, flag in zip(genres, flags, strict=True) if flag == "1"]
            add_unique(items, fields[0], make_item(fields[0], fields[1], chosen), files["item"], line, "item ID")
        users: dict[str, User] = {}
        for line, (user, age, gender, occupation, zip_code) in read_rows(files["user"], "|", 5):
            add_unique(users, user, make_user(user, age, gender, occupation, zip_code), files["user"], line, "user ID")
        return RawData(interactions, items, users)

    def _read_1m(self, files: dict[str, Path]) -> RawData:
        interactions = InteractionLog(files["inter"])
        for line, (user, item, rating, timestamp) in read_rows(files["inter"], "::", 4):
            interactions.add(user, item, timestamp, rating, line=line)
        items: dict[str, Item] = {}
        for line, (item, title, genres) in read_rows(files["item"], "::", 3):
            add_unique(items, item, make_item(item, title, genres.split("|")), files["item"], line, "item ID")
        users: dict[str, User] = {}
        for line, (user, gender, age, occupation, zip_code) in read_rows(files["user"], "::", 5):
            age, occupation = decode_1m(age, occupation, files["user"], line)
            add_unique(users, user, make_user(user, age, gender, occupation, zip_code), files["user"], line, "user ID")
        return RawData(interactions, items, users)

    def _read_recbole(self, files: dict[str, Path]) -> RawData:
        interactions = InteractionLog(files["inter"])
        for line, row in self._atomic(files["inter"], ("user_id", "item_id", "timestamp"), ("rating",)):
            interactions.add(row["user_id"], row["item_id"], row["timestamp"], row.get("rating"), line=line)
        items: dict[str, Item] = {}
        for line, row in self._atomic(files["item"], ("item_id", "movie_title"), ("release_year", "class", "genre")):
            genres = (row.get("class") or row.get("genre") or "").split()
            item = make_item(row["item_id"], row["movie_title"], genres, row.get("release_year") or None)
            add_unique(items, row["item_id"], item, files["item"], line, "item ID")
        users: dict[str, User] = {}
        for line, row in self._atomic(files["user"], ("user_id", "age", "gender", "occupation"), ("zip_code",)):
            age, occupation = row["age"], row["occupation"]
            if occupation.isdecimal():  # ml-1m's atomic files keep its codes; ml-100k's occupations are words
                age, occupation = decode_1m(age, occupation, files["user"], line)
            record = make_user(row["user_id"], age, row["gender"], occupation, row.get("zip_code", ""))
            add_unique(users, row["user_id"], record, files["user"], line, "user ID")
        return RawData(interactions, items, users)

    @staticmethod
    def _atomic(
        path: Path, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> Iterator[tuple[int, dict[str, str]]]:
        """Rows of a RecBole atomic file as dicts keyed by field name (the `:type` suffix dropped)."""
        with open(path, "rb") as handle:  # not `open_binary`: the rows' read below is the one the progress bar counts
            first = handle.readline().removeprefix(codecs.BOM_UTF8)
            header = [name.split(":")[0] for name in decode_line(first).rstrip("\r\n").split("\t")]
        missing = [name for name in required if name not in header]
        if missing:
            raise DataError(
                f"missing required column '{missing[0]}' in the header (found: {', '.join(header)})", path, 1
            )
        wanted = [name for name in (*required, *optional) if name in header]
        positions = [header.index(name) for name in wanted]
        rows = read_rows(path, "\t", len(header))
        next(rows)
        for line, fields in rows:
            yield line, {name: fields[i] for name, i in zip(wanted, positions, strict=True)}
