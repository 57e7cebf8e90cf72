"""The data build's fast paths give what the plain-Python reference code gives: orjson parsing, the reused JSON
Lines encoder, HTML cleaning, review words, intention snippets, the review spool and the interaction log."""

from __future__ import annotations

import html
import itertools
import json
import math
import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.interactions import InteractionLog, SpooledTexts, TextSpool, parse_rating, parse_timestamp
from align3gr.data.schema import Item, Sequence, User
from align3gr.data.texts import STOPWORDS, TaskTexts
from align3gr.errors import DataError
from align3gr.io import iter_json_lines, open_text, parse_json_object, write_jsonl
from data_builders.amazon import clean_html

_WORD = re.compile(r"[^\W\d_][\w']{2,}")
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
"""What `clean_html` removes before it decodes entities, and again after: HTML comments and tags (`<` then a letter or
`/`)."""
TRICKY_LINES = [
    '{"a": "caf\\u00e9 \u4e2d\u6587 \U0001f600", "b": "tab\\there \\"q\\" \\\\ \\/ \\u0000 \\u001f"}',
    '{"pair": "\\ud83d\\ude00", "lone": "\\ud800 x", "nan": NaN, "inf": -Infinity}',
    '{"big": 123456789012345678901234567890, "neg": -9223372036854775809, "e": 1e400, "z": -0}',
    '{"dup": 1, "x": [1, 2.5, null, true, false, {"y": {}}], "dup": 2}',
    '{"floats": [0.1, 0.30000000000000004, 1e-7, 5e-324, 1.7976931348623157e308, 2.5E+3, 123.456e-2]}',
    '{"a": 1}   ',
    "[1, 2]",
    '"just a string"',
    '{"a": 1,}',
    '{"a": 1} x',
    "{'a': 'python literal', 'b': (1, 2), 'c': None}",
    "{'a': '\\ud800 lone in a Python literal'}",
    '{"digits": ' + "1" * 5000 + "}",
    '{"\\udfff key": 1}',
    '{"a": "raw\tcontrol"}',
]


def reference_parse(text: str, path: str, line: int, allow_python_literals: bool) -> dict:
    """The parse before orjson: `json.loads`, then `ast.literal_eval` where allowed; a string that is not valid
    Unicode (a lone surrogate escape) rejected; a line opening a JSON array named as such."""
    import ast

    hint = " (one JSON object per line is expected: JSON Lines, not a JSON array)" if text.lstrip()[:1] == "[" else ""
    try:
        value = json.loads(text)
    except ValueError as err:
        if not allow_python_literals:
            reason = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
            raise DataError(f"malformed JSON ({reason}){hint}", path, line) from None
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError("malformed line: neither JSON nor a Python dict literal", path, line) from None
    try:
        json.dumps(value, ensure_ascii=False, default=repr).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            "malformed JSON (a lone surrogate escape such as \\ud800 is not a character)", path, line
        ) from None
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}{hint}", path, line)
    return value


def outcome(function, *args) -> tuple[str, object]:
    """('ok', repr of the value) or ('error', the message), comparable across implementations (NaN included)."""
    try:
        return "ok", repr(function(*args))
    except DataError as err:
        return "error", str(err)


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("text", TRICKY_LINES)
def test_parse_matches_the_standard_library(text, allow):
    assert outcome(parse_json_object, text, "f.json", 7, allow) == outcome(reference_parse, text, "f.json", 7, allow)


def test_parsed_floats_are_the_standard_librarys():
    rng = random.Random(0)
    numbers = [repr(rng.uniform(-1e6, 1e6)) for _ in range(300)]
    numbers += [f"{rng.randrange(10**17)}e{rng.randrange(-330, 310)}" for _ in range(300)]
    numbers += [f"0.{rng.randrange(10**25):025d}" for _ in range(300)]
    for number in numbers:
        line = f'{{"x": {number}}}'
        assert parse_json_object(line, "f", 1) == json.loads(line), number


def test_json_lines_keep_line_numbers_blank_lines_and_newline_styles(tmp_path):
    path = tmp_path / "rows.json"
    path.write_bytes(b'{"a": 1}\r\n\n   \t\n{"b": "\xc3\xa9"}\r{"c": 3}\n{"d": 4}')
    with open_text(path) as handle:
        expected = [(n, json.loads(t)) for n, t in enumerate(handle, start=1) if t.strip()]
    assert list(iter_json_lines(path)) == expected == [(1, {"a": 1}), (4, {"b": "é"}), (5, {"c": 3}), (6, {"d": 4})]


def test_written_json_lines_are_json_dumps_output(tmp_path):
    rows = [
        {"s": 'caf\u00e9 \u4e2d \U0001f600 "q" \\ / \x00 \x1f \x7f \u2028 \n\t\r\b\f', "k\u00e9y": None},
        {"f": [0.1, 1e16, 1e-7, -0.0, 5e-324, math.inf, -math.inf, 2.5, 10**30], "b": [True, False]},
        {"nested": {"a": [{"b": []}, {}], "c": "x"}, "t": (1, 2)},
    ]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    expected = "".join(json.dumps(r, ensure_ascii=False, separators=(", ", ": ")) + "\n" for r in rows)
    assert (tmp_path / "rows.jsonl").read_bytes() == expected.encode("utf-8")
    nan = tmp_path / "nan.jsonl"
    write_jsonl(nan, [{"x": math.nan}])
    assert nan.read_text() == '{"x": NaN}\n'


def test_clean_html_collapses_whitespace_as_split_and_join_do():
    rng = random.Random(1)
    pieces = ["a", "word", "&amp;", "&lt;", "<b>", "</i>", "é", "中", "\x00", "\x7f", " ", "  ", *WHITESPACE]
    texts = ["", " ", "x", " x", "x ", "a b", "a  b", *WHITESPACE]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(12))) for _ in range(3000)]
    for text in texts:
        reference = HTML_TAG.sub(" ", html.unescape(HTML_TAG.sub(" ", text)))
        assert clean_html(text) == " ".join(reference.split()), repr(text)


def reference_review_words(reviews: list[str], count: int = 4) -> list[str]:
    counts = Counter(w for text in reviews for w in _WORD.findall(text.lower()) if w not in STOPWORDS)
    return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:count] if n > 1]


def test_review_words_match_a_regex_scan_of_each_review():
    rng = random.Random(2)
    vocabulary = ["Sound", "TONE", "it's", "'tis", "''ab", "a'''", "don't", "the", "and", "ab", "x'yz", "o'", "great"]
    vocabulary += ["caf\u00e9", "\u212aelvin", "\u0130stanbul", "na\u00efve", "stra\u00dfe", "\u03a3\u03a3"]
    vocabulary += ["é'té", "1abc"]
    vocabulary += ["mp3s", "3d", "4k'ab", "_under_", "a_1", "x9", "1999", "am\u00e9lie", "caf\u00e9s"]
    vocabulary += ["abc123def", "end.", "(paren)", "tab\there", "new\nline", "-dash-", "'''", "sound"]
    for trial in range(300):
        ascii_only = trial % 2 == 0
        words = [w for w in vocabulary if w.isascii()] if ascii_only else vocabulary
        reviews = [" ".join(rng.choice(words) for _ in range(rng.randrange(15))) for _ in range(rng.randrange(9))]
        for chunk in (1, 2, 256):
            assert TaskTexts.review_words(reviews, chunk=chunk) == reference_review_words(reviews), reviews


def reference_snippet(review: str, title_words: frozenset[str]) -> str:
    words = (w for w in review.split() if not set(re.findall(r"\w+", w.casefold())) & title_words)
    return " ".join(itertools.islice(words, 8)).strip(" .,!?\"'")


def test_intention_snippets_leave_out_title_words_wherever_they_are():
    title = "Warm Tone Deluxe Amp: Spider-Man Am\u00e9lie 2 Up"
    items = {i: Item(i, title if i == "t" else f"Other {i}", "", ["Music", f"K{i}"], {"brand": "Acme"}) for i in "abt"}
    title_words = frozenset({"warm", "tone", "deluxe", "amp", "spider", "man", "am\u00e9lie", "2", "up"})
    reviews = [
        "Spider-Man's web, AM\u00c9LIE too: shot 2 ways, up-tempo, a 22 spider_man",
        "warm tone deluxe is what I wanted, the amp rocks!",
        "A B C D E F G Warm H I J K",
        'Tone, tone. TONE! "amp" deluxe\' warm warm warm warm warm warm warm warm only this',
        "one two three four five six seven eight nine",
        "  spaced\tout\n words  here  ",
        "warm",
        "",
    ]
    config = DataConfig()
    for review in reviews:
        seq = Sequence("u", ["a", "t", "b", "a"], [0, 1, 2, 3], None, ["", review, "", ""], None)
        request = TaskTexts(Dataset(items, {"u": User("u")}, {"u": seq}), config).intention(seq, 1)
        snippet = reference_snippet(review, title_words)
        assert request.facts.get("user_said", "") == snippet, review
        assert (f', ideally "{snippet}"' in request.template) == bool(snippet)


def test_spool_reads_ranges_reorders_and_slices_like_a_list():
    texts = ["ascii", "", "caf\u00e9", "\U0001f600 emoji", "x" * 5000, "\u4e2d\u6587", "last"]
    spool = TextSpool()
    assert [spool.append(t) for t in texts] == list(range(len(texts)))
    assert spool.get_range(0, len(texts)) == texts and spool.get_range(4, 5) == [texts[4]] and spool.get(2) == texts[2]
    assert spool.get_range(0, 2) == texts[:2]  # an ASCII-only range
    order = np.array([6, 2, 0, 5, 3, 1, 4])
    spool.reorder(order, chunk=3)
    assert spool.get_range(0, len(order)) == [texts[i] for i in order]
    spool.append("added")
    assert spool.get_range(6, 8) == [texts[4], "added"]
    view, expected = SpooledTexts(spool, 1, 6), [texts[i] for i in order[1:6]]
    assert list(view) == expected and len(view) == 5 and view == expected
    for index in (0, 3, -1, -5):
        assert view[index] == expected[index]
    for part in (slice(None, -2), slice(1, 3), slice(3, 1), slice(None, None, 2), slice(None, None, -1)):
        assert view[part] == expected[part]
    with pytest.raises(IndexError):
        view[5]
    spool.close()


def test_interaction_log_stores_what_the_parsers_give():
    values = [
        (1_400_000_000, 5.0),
        (2**53, 4.5),
        (2**53 + 1, 3),
        (-(2**53) - 3, "2.5"),
        (2**62 + 1, 1),
        (1.9, 0.30000000000000004),
        ("1400000000", None),
        (" 12 ", -0.0),
    ]
    log = InteractionLog(Path("x.json"))
    for line, (timestamp, rating) in enumerate(values, start=1):
        log.add("u", "i", timestamp, rating, line=line)
    columns = log.columns()
    assert columns["timestamp"].tolist() == [parse_timestamp(t, Path("x"), 0) for t, _ in values]
    expected = [math.nan if r is None else parse_rating(r, Path("x"), 0) for _, r in values]
    assert np.array_equal(columns["rating"], expected, equal_nan=True)
    for timestamp, rating, message in [
        (True, 5.0, "x.json:9: timestamp must be a number, got True"),
        (5, math.nan, "x.json:9: rating must be a finite number, got nan"),
        (5, math.inf, "x.json:9: rating must be a finite number, got inf"),
        (math.inf, 5.0, "x.json:9: timestamp must be a finite number, got inf"),
        (5, False, "x.json:9: rating must be a number, got False"),
    ]:
        with pytest.raises(DataError) as caught:
            log.add("u", "i", timestamp, rating, line=9)
        assert str(caught.value) == message


def tricky_reviews() -> list[str]:
    """Reviews of 3 users x 4 items with unicode, escapes, entities, tags and whitespace, and a Python-literal meta."""
    texts = [
        "caf\\u00e9 &amp; <b>bold</b> \\ud83d\\ude00",
        "tab\\there\\nnew line  &lt;tag&gt;",
        "\u4e2d\u6587 \u00a0nbsp \\u2028 sep",
        'quote \\"q\\" back\\\\slash &#39;x&#39; &eacute;',
    ]
    lines = []
    for u in range(3):
        for i in range(4):
            fields = [f'"reviewerID": "U{u}"', f'"asin": "B{i}"', f'"overall": {1 + (u + i) % 5}.0']
            fields += [f'"unixReviewTime": {1_400_000_000 + 10 * i + u}', f'"reviewText": "{texts[(u + i) % 4]}"']
            if i % 2:
                fields.append(f'"summary": "{texts[i]} s"')
            lines.append("{" + ", ".join(fields) + "}")
    return lines


def write_tricky(folder: Path, reviews: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reviews.json").write_text("\n".join(reviews) + "\n", encoding="utf-8")
    meta = [
        {"asin": f"B{i}", "title": f"Caf\u00e9 &amp; <i>Item</i> {i}", "category": ["A", f"K{i}"]} for i in range(4)
    ]
    meta = [repr(m) for m in meta]
    (folder / "meta_x.json").write_text("\n".join(meta) + "\n", encoding="utf-8")
    return folder


def test_amazon_builder_on_tricky_json_keeps_the_texts_of_a_plain_parse(tmp_path):
    reviews = tricky_reviews()
    build_dataset("amazon", write_tricky(tmp_path / "raw", reviews), tmp_path / "out", DataConfig(user_k=3, item_k=3))
    dataset = load_dataset(tmp_path / "out")
    assert dataset.items["B1"].title == "Café & Item 1"
    for line in reviews:
        row = json.loads(line)
        parts = [
            " ".join(HTML_TAG.sub(" ", html.unescape(HTML_TAG.sub(" ", row.get(k, "")))).split())
            for k in ("summary", "reviewText")
        ]
        seq = dataset.sequences[row["reviewerID"]]
        assert seq.reviews[seq.items.index(row["asin"])] == ". ".join(p for p in parts if p)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"reviewerID": "U0", "asin": "B1", "overall": NaN, "unixReviewTime": 5}', "rating must be a finite number"),
        ('{"reviewerID": "U0", "asin": "B1", "overall": 5, "unixReviewTime": 1e999}', "timestamp must be a finite"),
        ('{"reviewerID": "U0", "asin": "B1", "overall": "x", "unixReviewTime": 5}', "rating must be a number"),
        ('{"reviewerID": "U0", "asin": "B1", "overall": "x\\ud800", "unixReviewTime": 5}', "malformed JSON (a lone"),
        ('{"reviewerID": null, "asin": "B1", "overall": 5, "unixReviewTime": 5}', "field 'reviewerID' must be an ID"),
        ('{"reviewerID": "U0", "asin": ["B1"], "overall": 5, "unixReviewTime": 5}', "field 'asin' must be an ID"),
        pytest.param(
            '{"reviewerID": "U0", "asin": "B1", "overall": 1' + "0" * 400 + ', "unixReviewTime": 5}',
            "rating must be a finite",
            id="rating-beyond-float",
        ),
        pytest.param(
            '{"reviewerID": "U0", "asin": "B1", "overall": 5, "unixReviewTime": 1' + "0" * 19 + "}",
            "timestamp 1" + "0" * 19,
            id="timestamp-beyond-int64",
        ),
        pytest.param(
            '{"reviewerID": "U0", "asin": "B1", "overall": 5, "unixReviewTime": 5, "n": 1' + "0" * 5000 + "}",
            "malformed JSON (Exceeds",
            id="integer-past-digit-limit",
        ),
        ('{"reviewerID": "U0", "overall": 5, "unixReviewTime": 5}', "missing required field 'asin'"),
        ('{"asin": "B1", "overall": 5}', "missing required field 'reviewerID'"),
        ('{"reviewerID": "U0", "asin": "B1", "unixReviewTime": 5}', "missing required field 'overall'"),
        ('{"reviewerID": "U0", "asin": "B1", "overall": 5}', "missing required field 'unixReviewTime'"),
        ('{"reviewerID": "", "asin": "B1", "overall": 5, "unixReviewTime": 5}', "empty user or item ID"),
        ('{"reviewerID": "U0", "asin": "B1", "overall": 5, "unixReviewTime": 5,}', "malformed JSON"),
    ],
)
def test_amazon_errors_name_the_file_and_line_as_before(tmp_path, line, message):
    reviews = tricky_reviews()
    reviews[6] = line
    try:
        json.loads(line)
    except json.JSONDecodeError as err:
        message = f"malformed JSON ({err.msg} at column {err.colno})"
    except ValueError:
        pass
    with pytest.raises(DataError) as caught:
        build_dataset("amazon", write_tricky(tmp_path / "raw", reviews), tmp_path / "out", DataConfig())
    assert str(caught.value).startswith(f"{tmp_path / 'raw' / 'reviews.json'}:7: {message}")
