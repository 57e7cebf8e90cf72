"""The Yelp builder on small business / review / user files."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import DataError

SMALL = DataConfig(user_k=5, item_k=5)


def write_yelp(folder: Path, users: int = 6, businesses: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"business_id": f"b{k}", "name": f"Cafe {k}", "city": "Tucson", "state": "AZ", "stars": 4.5,
         "categories": "Coffee & Tea, Cafes" if k % 2 else None, "attributes": {"RestaurantsPriceRange2": "2"}}
        for k in range(businesses)
    ]  # fmt: skip
    (folder / "business.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reviews = [
        {"review_id": f"r{u}-{k}", "user_id": f"u{u}", "business_id": f"b{k}", "stars": 1 + (u + k) % 5,
         "date": f"2019-0{1 + k}-1{u} 08:30:00", "text": f"Lovely  latte\n number {k}"}
        for u in range(users) for k in range(businesses)
    ]  # fmt: skip
    (folder / "review.json").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    people = [
        {"user_id": f"u{u}", "review_count": 10 + u, "yelping_since": "2012-01-01", "name": "x"} for u in range(users)
    ]
    (folder / "user.json").write_text("".join(json.dumps(p) + "\n" for p in people))
    return folder


def test_yelp(tmp_path):
    build_dataset("yelp", write_yelp(tmp_path / "raw"), tmp_path / "out", SMALL)
    dataset = load_dataset(tmp_path / "out")
    item = dataset.items["b1"]
    assert item.title == "Cafe 1"
    assert item.categories == ["Coffee & Tea", "Cafes"]
    assert item.description == "Cafe 1 in Tucson, AZ. Categories: Coffee & Tea, Cafes."
    assert item.attributes == {"city": "Tucson", "state": "AZ", "stars": 4.5, "price_range": 2}
    assert dataset.items["b0"].categories == []
    seq = dataset.sequences["u2"]
    assert seq.items == [f"b{k}" for k in range(6)]
    expected = datetime(2019, 1, 12, 8, 30, tzinfo=timezone.utc).timestamp()
    assert seq.timestamps[0] == int(expected)
    assert seq.ratings == [1 + (2 + k) % 5 for k in range(6)]
    assert seq.reviews[0] == "Lovely latte number 0"
    assert dataset.users["u3"].attributes == {"review_count": 13, "yelping_since": "2012-01-01"}
    assert dataset.users["u3"].profile


def corrupt(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "text", "pattern"),
    [
        ("business.json", 3, '{"business_id": "b0", "name": "Again"}', r"business\.json:3: duplicate business_id 'b0'"),
        ("business.json", 2, '{"business_id": "b1"}', r"business\.json:2: missing required field 'name'"),
        ("review.json", 4, '{"user_id": "u0", "business_id": "b3", "stars": 4, "date": "03/01/2019"}',
         r"review\.json:4: date '03/01/2019': expected 'YYYY-MM-DD HH:MM:SS'"),
        ("review.json", 5, '{"user_id": "u0", "business_id": "b4", "stars": "many", "date": "2019-01-01 00:00:00"}',
         r"review\.json:5: rating must be a number, got 'many'"),
        ("review.json", 6, '{"user_id": "u0", "business_id": "zz", "stars": 4, "date": "2019-01-01 00:00:00"}',
         r"review\.json:6: interaction of user 'u0' names item 'zz', which has no metadata"),
        ("review.json", 7, '{"user_id": "u1", ', r"review\.json:7: malformed JSON"),
        ("review.json", 7, '{"user_id": ["u1"], "business_id": "b0", "stars": 4, "date": "2019-01-01 00:00:00"}',
         r"review\.json:7: field 'user_id' must be an ID \(a string\), got \['u1'\]"),
        ("business.json", 2, '{"business_id": "b1", "name": "B", "categories": ["Food"]}',
         r"business\.json:2: field 'categories' must be a str or null, got list"),
        ("business.json", 2, '{"business_id": "b1", "name": "B", "attributes": "None"}',
         r"business\.json:2: field 'attributes' must be a dict or null, got str"),
        ("business.json", 2, '{"business_id": "b1", "name": "B", "city": ["x"]}',
         r"business\.json:2: field 'city' must be a str or null, got list"),
        ("user.json", 1, '{"user_id": ["u0"]}', r"user\.json:1: field 'user_id' must be an ID"),
    ],
)  # fmt: skip
def test_bad_input(tmp_path, file, line, text, pattern):
    source = write_yelp(tmp_path / "raw")
    corrupt(source / file, line, text)
    with pytest.raises(DataError, match=pattern):
        build_dataset("yelp", source, tmp_path / "out", SMALL)
    assert not (tmp_path / "out").exists()


def test_missing_business_file(tmp_path):
    source = write_yelp(tmp_path / "raw")
    (source / "business.json").unlink()
    with pytest.raises(DataError, match=r"no business\.json"):
        build_dataset("yelp", source, tmp_path / "out", SMALL)


def test_nan_stars_are_no_attribute_and_the_items_file_stays_standard_json(tmp_path):
    folder = write_yelp(tmp_path / "raw")
    business = folder / "business.json"
    business.write_text(business.read_text().replace('"stars": 4.5', '"stars": NaN', 1))
    build_dataset("yelp", folder, tmp_path / "out", SMALL)
    lines = (tmp_path / "out" / "items.jsonl").read_text().splitlines()
    items = {row["item_id"]: row for row in map(orjson.loads, lines)}  # orjson reads standard JSON only
    assert "stars" not in items["b0"]["attributes"] and items["b1"]["attributes"]["stars"] == 4.5
