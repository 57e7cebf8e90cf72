"""The Amazon builder on small files in the 2014 (gzipped, Python-literal metadata) and 2018 (JSON) layouts."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.data.interactions import TextSpool
from align3gr.errors import DataError
from data_builders.amazon import clean_html

USERS, ITEMS = 6, 6
SMALL = DataConfig(user_k=5, item_k=5)


def review_rows(year: int) -> list[dict]:
    rows = []
    for u in range(USERS):
        for i in [*range(ITEMS), 99]:  # item B099 has reviews but no metadata
            row = {"reviewerID": f"U{u}", "asin": f"B{i:03d}", "overall": float(1 + (u + i) % 5)}
            row |= {"summary": f"Take {i}", "reviewText": f"Great &amp; <i>loud</i> sound number {i}"}
            if year == 2018 and i == 2:
                row["reviewTime"] = f"0{1 + u} 1{i}, 2015"
            else:
                row["unixReviewTime"] = 1_400_000_000 + 1000 * i + u
            rows.append(row)
    return rows


def meta_2014(i: int) -> dict:
    record = {"asin": f"B{i:03d}", "title": f"Fender &amp; Co <b>Strat</b> {i}", "price": 12.5 + i}
    record |= {"brand": "Fender", "categories": [["Musical Instruments", "Guitars", f"Kind {i % 2}"], ["Other"]]}
    record["description"] = "<p>Solid body</p>"
    return record


def meta_2018(i: int) -> dict:
    record = {"asin": f"B{i:03d}", "title": f"Yamaha Keys {i}", "price": f"${100 + i}.99", "brand": "Yamaha"}
    record |= {"category": ["Musical Instruments", "Keyboards"], "description": ["Weighted keys.", "USB."]}
    return record


def write_2014(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "reviews_Instruments_5.json.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in review_rows(2014))
    with gzip.open(folder / "meta_Instruments.json.gz", "wt") as handle:
        handle.writelines(repr(meta_2014(i)) + "\n" for i in range(ITEMS))
        handle.write(repr(meta_2014(0) | {"title": "A later duplicate"}) + "\n")
    return folder


def write_2018(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Keyboards.json").write_text("".join(json.dumps(r) + "\n" for r in review_rows(2018)))
    meta = [meta_2018(i) for i in range(ITEMS)] + [{"asin": "B099", "title": "  "}]
    (folder / "meta_Keyboards.json").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return folder


def test_amazon_2014(tmp_path):
    result = build_dataset("amazon", write_2014(tmp_path / "raw"), tmp_path / "out", SMALL)
    dataset = load_dataset(tmp_path / "out")
    assert len(dataset.items) == ITEMS and "B099" not in dataset.items
    item = dataset.items["B001"]
    assert item.title == "Fender & Co Strat 1"
    assert item.description == "Solid body"
    assert item.categories == ["Musical Instruments", "Guitars", "Kind 1"]
    assert item.attributes == {"brand": "Fender", "price": 13.5}
    assert dataset.items["B000"].title == "Fender & Co Strat 0"  # the first of a repeated asin is kept
    seq = dataset.sequences["U1"]
    assert seq.items == [f"B{i:03d}" for i in range(ITEMS)]
    assert seq.ratings == [1 + (1 + i) % 5 for i in range(ITEMS)]
    assert seq.reviews[3] == "Take 3. Great & loud sound number 3"
    assert result.dataset.meta["counts"]["raw_interactions"] == USERS * (ITEMS + 1)
    assert result.dataset.meta["counts"]["with_metadata"] == USERS * ITEMS
    assert result.dataset.meta["filters"]["missing_metadata"] == "drop"
    assert "sound" in dataset.users["U1"].profile  # a profile summarising the user's training reviews


def test_amazon_2018_from_the_reviews_file(tmp_path):
    source = write_2018(tmp_path / "raw")
    build_dataset("amazon", source / "Keyboards.json", tmp_path / "out", SMALL)
    dataset = load_dataset(tmp_path / "out")
    item = dataset.items["B002"]
    assert item.description == "Weighted keys. USB."
    assert item.categories == ["Musical Instruments", "Keyboards"]
    assert item.attributes == {"brand": "Yamaha", "price": 102.99}
    assert "B099" not in dataset.items  # blank title counts as no metadata
    seq = dataset.sequences["U0"]
    assert seq.timestamps == sorted(seq.timestamps)
    assert seq.items[-1] == "B002"  # reviewTime in 2015 comes after the 2014 unix times


def review_rows_2023() -> list[dict]:
    """2023 reviews: the item is `parent_asin` (item `P001` is reviewed under two variant `asin`s), times in ms."""
    rows = []
    for u in range(USERS):
        for i in [*range(ITEMS), 99]:
            row = {"rating": float(1 + (u + i) % 5), "title": f"Take {i}", "text": f"Warm &amp; <b>soft</b> {i}"}
            row |= {"images": [], "asin": f"V{i:03d}{u % 2}", "parent_asin": f"P{i:03d}", "user_id": f"AE{u}"}
            row |= {"timestamp": 1_600_000_000_000 + 1000 * i + u, "helpful_vote": 0, "verified_purchase": True}
            rows.append(row)
    return rows


def meta_2023(i: int) -> dict:
    record = {"main_category": "All Beauty", "title": f"Lip &amp; Cheek Tint {i}", "average_rating": 4.5}
    record |= {"features": ["Long lasting", "Vegan"], "description": [f"<p>Shade {i}</p>"] if i % 2 else []}
    record |= {"price": [9.5, None, "12.00", "None", "$3", -1][i], "store": "Glow" if i < 4 else None}
    record |= {"categories": ["Beauty", "Makeup", "Lips"] if i % 3 else [], "details": {"Brand": "GlowCo"}}
    return record | {"parent_asin": f"P{i:03d}", "images": [], "videos": [], "bought_together": None}


def write_2023(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "All_Beauty.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in review_rows_2023())
    meta = [meta_2023(i) for i in range(ITEMS)] + [meta_2023(0) | {"title": "A later duplicate"}]
    (folder / "meta_All_Beauty.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return folder


def test_amazon_2023(tmp_path):
    result = build_dataset("amazon", write_2023(tmp_path / "raw"), tmp_path / "out", SMALL)
    dataset = load_dataset(tmp_path / "out")
    assert sorted(dataset.items) == [f"P{i:03d}" for i in range(ITEMS)]  # parent_asin; P099 has no metadata
    assert dataset.items["P000"].title == "Lip & Cheek Tint 0"  # the first of a repeated parent_asin
    assert dataset.items["P001"].description == "Shade 1"
    assert dataset.items["P000"].description == "Long lasting Vegan"  # no description: the features
    assert dataset.items["P001"].categories == ["Beauty", "Makeup", "Lips"]
    assert dataset.items["P000"].categories == ["All Beauty"]  # no categories: the main category
    prices = [dataset.items[f"P{i:03d}"].attributes.get("price") for i in range(ITEMS)]
    assert prices == [9.5, None, 12.0, None, 3.0, None]
    assert dataset.items["P000"].attributes["brand"] == "Glow"
    assert dataset.items["P005"].attributes["brand"] == "GlowCo"  # no store: details.Brand
    seq = dataset.sequences["AE1"]
    assert seq.items == [f"P{i:03d}" for i in range(ITEMS)]
    assert seq.timestamps == [1_600_000_000_000 + 1000 * i + 1 for i in range(ITEMS)]
    assert seq.ratings == [1 + (1 + i) % 5 for i in range(ITEMS)]
    assert seq.reviews[3] == "Take 3. Warm & soft 3"
    counts = result.dataset.meta["counts"]
    assert (counts["raw_interactions"], counts["with_metadata"]) == (USERS * (ITEMS + 1), USERS * ITEMS)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"parent_asin": None},
            r"All_Beauty\.jsonl:5: missing required field 'parent_asin' \(or it is null\); the file's first record is"
            r" in the Amazon 2023 layout",
        ),
        ({"timestamp": None}, r"All_Beauty\.jsonl:5: missing required field 'timestamp'"),
        ({"timestamp": "soon"}, r"All_Beauty\.jsonl:5: timestamp"),
        ({"rating": "five"}, r"All_Beauty\.jsonl:5: rating"),
        ({"user_id": ["AE0"]}, r"All_Beauty\.jsonl:5: field 'user_id' must be an ID"),
    ],
)
def test_bad_2023_reviews(tmp_path, change, pattern):
    """A 2023 record lacking a field of its layout, or holding a bad value, names the file and line; so does a 2018
    record in a 2023 file."""
    source = write_2023(tmp_path / "raw")
    rows = review_rows_2023()
    rows[4] = {k: v for k, v in (rows[4] | change).items() if v is not None}
    (source / "All_Beauty.jsonl.gz").unlink()
    (source / "All_Beauty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=pattern):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_a_file_mixing_releases_is_an_error(tmp_path):
    source = write_2023(tmp_path / "raw")
    (source / "All_Beauty.jsonl.gz").unlink()
    rows = [*review_rows_2023()[:3], *review_rows(2018)]
    (source / "All_Beauty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"All_Beauty\.jsonl:4: missing required field 'user_id'.* 2023 layout"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    write_2018(source)
    (source / "meta_All_Beauty.jsonl").unlink()
    (source / "All_Beauty.jsonl").unlink()
    (source / "meta_Keyboards.json").write_text(json.dumps(meta_2023(0)) + "\n")
    with pytest.raises(DataError, match=r"meta_Keyboards\.json:1: missing required field 'asin' \(Amazon 2014/2018"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)


def test_explicit_file_options(tmp_path):
    source = write_2018(tmp_path / "raw")
    (source / "Keyboards.json").rename(tmp_path / "reviews.json")
    options = {"reviews": str(tmp_path / "reviews.json"), "meta": str(source / "meta_Keyboards.json")}
    result = build_dataset("amazon", tmp_path, tmp_path / "out", SMALL, options)
    assert len(result.dataset.items) == ITEMS


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"reviewerID": "U0", "asin": ', r"Keyboards\.json:5: malformed JSON"),
        (
            '{"reviewerID": "U0", "overall": 3, "unixReviewTime": 5}',
            r"Keyboards\.json:5: missing required field 'asin'",
        ),
        ('{"reviewerID": "U0", "asin": "B001", "overall": "five", "unixReviewTime": 5}', r"Keyboards\.json:5: rating"),
        ('{"reviewerID": "U0", "asin": "B001", "overall": 5, "unixReviewTime": "x"}', r"Keyboards\.json:5: timestamp"),
        (
            '{"reviewerID": "U0", "asin": "B001", "overall": 5, "reviewTime": "2015-01-01"}',
            r"Keyboards\.json:5: reviewTime",
        ),
        ("[1, 2]", r"Keyboards\.json:5: expected a JSON object"),
        pytest.param(
            "[" * 100_000, r"Keyboards\.json:5: malformed JSON \(maximum recursion depth", id="nested-too-deeply"
        ),
        (
            '{"reviewerID": "U0", "asin": "B001", "overall": null, "unixReviewTime": 5}',
            r"Keyboards\.json:5: missing required field 'overall' \(or it is null\)",
        ),
    ],
)
def test_bad_reviews(tmp_path, line, pattern):
    source = write_2018(tmp_path / "raw")
    lines = (source / "Keyboards.json").read_text().splitlines()
    lines[4] = line
    (source / "Keyboards.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=pattern):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_bad_metadata_and_ambiguous_files(tmp_path):
    source = write_2018(tmp_path / "raw")
    with pytest.raises(DataError, match=r"raw/typo: not found: expected the dataset's folder"):
        build_dataset("amazon", source / "typo", tmp_path / "out", SMALL)
    meta = (source / "meta_Keyboards.json").read_text()
    (source / "meta_Keyboards.json").write_text(meta + '{"asin": 7, "title": "An integer ASIN"}\n')
    assert len(build_dataset("amazon", source, tmp_path / "ok", SMALL).dataset.items) == ITEMS
    (source / "meta_Keyboards.json").write_text(meta + '{"asin": [7], "title": "A list"}\n')
    with pytest.raises(DataError, match=r"meta_Keyboards\.json:8: field 'asin' must be an ID"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    (source / "meta_Keyboards.json").write_text(meta)
    with open(source / "meta_Keyboards.json", "a") as handle:
        handle.write("{'asin': 'B001', 'title': \n")
    with pytest.raises(DataError, match=r"meta_Keyboards\.json:8: malformed line: neither JSON nor a Python dict"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    (source / "Other.json").write_text("")
    with pytest.raises(DataError, match="expected exactly one reviews file.*found: Keyboards.json, Other.json"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_unreadable_files_name_the_file_and_line(tmp_path):
    """Bytes that are not UTF-8 (past the reader's first decoded block), a cut-off gzip and a plain file named .gz."""
    source = write_2018(tmp_path / "raw")
    reviews = source / "Keyboards.json"
    lines = reviews.read_bytes().splitlines(keepends=True)
    padded = lines[:4] + [json.dumps(review_rows(2018)[0] | {"pad": "x" * 3000}).encode() + b"\n"] * 30 + lines[4:]
    padded[33] = padded[33].replace(b"Take", b"T\xffke")
    reviews.write_bytes(b"".join(padded))
    with pytest.raises(DataError, match=r"Keyboards\.json:34: not UTF-8 text \(byte 0xff\)"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    reviews.write_bytes(b"".join(lines))
    packed = gzip.compress(reviews.read_bytes())
    reviews.unlink()
    (source / "Keyboards.json.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"Keyboards\.json\.gz:\d+: corrupt or cut-off gzip file"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    (source / "Keyboards.json.gz").write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"Keyboards\.json\.gz:1: corrupt or cut-off gzip file \(Not a gzipped file"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_a_review_without_a_rating_among_rated_ones_is_an_error(tmp_path):
    """A builder that records no rating for one interaction (here one Yelp-style row through the log directly)
    would otherwise drop every rating of the dataset in silence."""
    from align3gr.data.build import assemble
    from align3gr.data.builder import RawData
    from align3gr.data.interactions import InteractionLog
    from align3gr.data.schema import Item

    log = InteractionLog(tmp_path / "reviews.json")
    for k in range(6):
        log.add(f"U{k % 2}", f"B{k % 3}", k, None if k == 4 else 5.0, line=k + 1)
    items = {f"B{i}": Item(f"B{i}", f"Item {i}") for i in range(3)}
    with pytest.raises(DataError, match=r"reviews\.json:5: this interaction has no rating while others have one"):
        assemble(RawData(log, items), DataConfig(user_k=1, item_k=1), "error")


def test_an_edited_template_file_rebuilds_the_texts(tmp_path, monkeypatch):
    source = write_2018(tmp_path / "raw")
    assert not build_dataset("amazon", source, tmp_path / "out", SMALL).up_to_date
    assert build_dataset("amazon", source, tmp_path / "out", SMALL).up_to_date
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    original = (Path(__file__).resolve().parent.parent / "prompts" / "data_texts.yaml").read_text()
    (prompts / "data_texts.yaml").write_text(original)
    monkeypatch.setenv("ALIGN3GR_PROMPTS", str(prompts))
    assert build_dataset("amazon", source, tmp_path / "out", SMALL).up_to_date  # the same templates
    (prompts / "data_texts.yaml").write_text(original + "\n# edited\n")
    assert not build_dataset("amazon", source, tmp_path / "out", SMALL, overwrite=True).up_to_date


def test_another_align3gr_version_builds_the_data_again(tmp_path, monkeypatch):
    """The filters and task texts are align3gr's code, not the builder's: a build of another release is not reused."""
    source = write_2018(tmp_path / "raw")
    assert not build_dataset("amazon", source, tmp_path / "out", SMALL).up_to_date
    monkeypatch.setattr("align3gr.__version__", "0.0.0-other")
    assert not build_dataset("amazon", source, tmp_path / "out", SMALL, overwrite=True).up_to_date


def test_a_price_beyond_float_range_is_no_price(tmp_path):
    source = write_2018(tmp_path / "raw")
    meta = source / "meta_Keyboards.json"
    text = meta.read_text().replace('"$101.99"', "1e999").replace('"$102.99"', "-3")
    meta.write_text(text.replace('"$104.99"', '"$' + "9" * 400 + '"'))  # a string that float() reads as inf
    items = build_dataset("amazon", source, tmp_path / "out", SMALL).dataset.items
    assert all("price" not in items[i].attributes for i in ("B001", "B002", "B004"))
    assert "Infinity" not in (tmp_path / "out" / "items.jsonl").read_text()
    assert items["B003"].attributes["price"] == 103.99


@pytest.mark.parametrize(
    ("summary", "body", "text"),
    [
        ("Five Stars", "Works well", "Five Stars. Works well"),
        ("Works great!", "Loud", "Works great! Loud"),
        ("Worth it?", "Yes", "Worth it? Yes"),
        ("Fine.", "Quiet", "Fine. Quiet"),
        ("", "Quiet", "Quiet"),
        ("Fine", "", "Fine"),
    ],
)
def test_a_reviews_summary_and_body_read_as_one_text(tmp_path, summary, body, text):
    rows = [r | {"summary": summary, "reviewText": body} for r in review_rows(2018)]
    folder = write_2018(tmp_path / "raw")
    (folder / "Keyboards.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_dataset("amazon", folder / "Keyboards.json", tmp_path / "out", SMALL)
    reviews = load_dataset(tmp_path / "out").sequences["U0"].reviews
    assert reviews is not None and set(reviews) == {text}


@pytest.mark.parametrize("meta", ["", json.dumps({"asin": "Z1", "title": "An item nobody reviewed"}) + "\n"])
def test_metadata_of_none_of_the_items_stops_the_build_and_names_the_counts(tmp_path, meta):
    """An empty or unrelated metadata file drops every interaction: an error, not an empty dataset."""
    source = write_2018(tmp_path / "raw")
    (source / "meta_Keyboards.json").write_text(meta)
    with pytest.raises(
        DataError, match=rf"Keyboards\.json: no interaction's item has metadata.*{USERS * (ITEMS + 1)} raw interactions"
    ) as caught:
        build_dataset("amazon", source, tmp_path / "out", SMALL)
    assert "with metadata 0" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no output folder, no temporary beside it


def test_the_review_spool_is_never_visible_in_the_temporary_folder(tmp_path, monkeypatch):
    """The spool file has no name from the moment it is made, so a build killed with review text spooled (SIGKILL,
    which runs no cleanup) leaves no file in the temporary folder."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    spool = TextSpool()
    spool.append("a review")
    spool.reorder(np.array([0]))
    assert spool.get(0) == "a review" and not list(temp.iterdir())
    spool.close()
    build_dataset("amazon", write_2018(tmp_path / "raw"), tmp_path / "out", SMALL)
    assert not list(temp.iterdir())
    killed = "import os, signal\nfrom align3gr.data.interactions import TextSpool\nspool = TextSpool()\n"
    killed += "spool.append('a review')\nos.kill(os.getpid(), signal.SIGKILL)\n"
    process = subprocess.run([sys.executable, "-c", killed], env={**os.environ, "TMPDIR": str(temp)}, check=False)
    assert process.returncode == -signal.SIGKILL
    assert not list(temp.glob("align3gr-spool-*"))


def test_a_byte_order_mark_at_the_start_of_a_file_is_skipped(tmp_path):
    plain = write_2018(tmp_path / "plain")
    marked = write_2018(tmp_path / "marked")
    for name in ("Keyboards.json", "meta_Keyboards.json"):
        (marked / name).write_bytes(codecs.BOM_UTF8 + (marked / name).read_bytes())
    build_dataset("amazon", plain, tmp_path / "plain_out", SMALL)
    build_dataset("amazon", marked, tmp_path / "marked_out", SMALL)
    for name in ("items.jsonl", "users.jsonl", "sequences.jsonl", "intentions.jsonl", "preferences.jsonl"):
        assert (tmp_path / "plain_out" / name).read_bytes() == (tmp_path / "marked_out" / name).read_bytes(), name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("TV Wall Mount for 32 < 55 inch TVs, holds > 100 lbs", "TV Wall Mount for 32 < 55 inch TVs, holds > 100 lbs"),
        ("Rated &lt;3 by kids. Size: 5 in &gt; 4 in.", "Rated <3 by kids. Size: 5 in > 4 in."),
        ("Line one<br/>line two", "Line one line two"),
        ("A <b>bold</b> <I>claim</I>", "A bold claim"),
        ('See <a href="https://example.com/?a=1&amp;b=2">the &amp; manual</a>.', "See the & manual ."),
        ("Kept<!-- a <b>hidden</b>\n note --> text", "Kept text"),
        ("Double-escaped &lt;b&gt;markup&lt;/b&gt;&lt;br /&gt;is dropped", "Double-escaped markup is dropped"),
    ],
)
def test_clean_html_removes_tags_only_before_and_after_decoding_entities(raw, clean):
    assert clean_html(raw) == clean


def test_a_numeric_title_is_the_items_title_and_nan_no_value(tmp_path):
    """A title JSON gives as a number (the book "1984") is kept as its text, not taken for missing metadata (which
    dropped the item and its interactions); NaN, as Python's json writes a missing float, is no value."""
    folder = write_2018(tmp_path / "raw")
    meta = folder / "meta_Keyboards.json"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    rows[0]["title"], rows[1]["brand"] = 1984, float("nan")
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = build_dataset("amazon", folder, tmp_path / "out").dataset
    assert dataset.items[rows[0]["asin"]].title == "1984"
    assert "brand" not in dataset.items[rows[1]["asin"]].attributes
    assert [clean_html(v) for v in (7, 2.5, float("inf"), True, None, ["x"])] == ["7", "2.5", "", "", "", ""]


def test_a_gzipped_file_without_gz_in_its_name_reads_and_a_json_array_is_named(tmp_path):
    """A `.json` saved gzipped (no UTF-8 text starts with gzip's magic bytes) builds as the plain file does; a JSON
    array where JSON Lines are expected is named as such."""
    source = write_2018(tmp_path / "raw")
    plain = build_dataset("amazon", source, tmp_path / "plain", SMALL).statistics
    reviews = source / "Keyboards.json"
    rows = [json.loads(line) for line in reviews.read_text().splitlines()]
    reviews.write_bytes(gzip.compress(reviews.read_bytes()))
    assert build_dataset("amazon", source, tmp_path / "packed", SMALL).statistics == plain
    reviews.write_text(json.dumps(rows, indent=2))
    with pytest.raises(DataError, match=r"Keyboards\.json:1: malformed JSON .*JSON Lines, not a JSON array"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)


def test_metadata_whose_records_all_lack_a_title_is_named(tmp_path):
    """`Title` for `title` in every metadata record: the error names the metadata file and the field."""
    source = write_2018(tmp_path / "raw")
    meta = source / "meta_Keyboards.json"
    meta.write_text(meta.read_text().replace('"title"', '"Title"'))
    with pytest.raises(DataError, match=rf"meta_Keyboards\.json: none of the {ITEMS + 1} records of reviewed items"):
        build_dataset("amazon", source, tmp_path / "out", SMALL)
