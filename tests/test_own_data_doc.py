"""`docs/your_own_data.md` as a user follows it: its CSV conversion script, then its `shop.yaml` source and data
sections with `align3gr data build` and `align3gr data stats`, on a small crafted shop."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from align3gr.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "your_own_data.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def write_shop_csvs(folder: Path, users: int = 12, items: int = 10, per_user: int = 8) -> None:
    """User u rates items u, u+1, ... (mod `items`) in that order, one a day: a 5-core as it is. Item 0 has no price
    (an empty cell) and its category path has two levels."""
    with open(folder / "events.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item", "rating", "timestamp", "review"])
        for u in range(users):
            for j in range(per_user):
                item = (u + j) % items
                writer.writerow([f"u{u}", f"i{item}", 1 + (u + j) % 5, 1_700_000_000 + 86_400 * j, f"Review of {item}"])
    with open(folder / "items.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title", "description", "category", "brand", "price"])
        for i in range(items):
            writer.writerow([f"i{i}", f"Item number {i}", f"A thing numbered {i}.", "Home|Kitchen", "Acme",
                             "" if i == 0 else f"{i}.5"])  # fmt: skip


def test_the_documented_conversion_and_build_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_shop_csvs(tmp_path)
    (script,) = blocks("python")
    exec(compile(script, str(DOC), "exec"), {})
    event = json.loads(Path("data/raw/shop/events.jsonl").read_text().splitlines()[0])
    assert event == {"reviewerID": "u0", "asin": "i0", "overall": 1.0, "unixReviewTime": 1_700_000_000,
                     "reviewText": "Review of 0"}  # fmt: skip

    config = next(yaml.safe_load(text) for text in blocks("yaml") if text.startswith("source:"))
    assert config["source"] == {"builder": "amazon", "source": "data/raw/shop", "options": {}}
    Path("shop.yaml").write_text(yaml.safe_dump(config))
    assert main(["data", "build", "--config", "shop.yaml", "--out", "runs/shop/data"]) == 0
    assert main(["data", "stats", "runs/shop/data"]) == 0
    assert "runs/shop/data" in capsys.readouterr().out

    meta = json.loads(Path("runs/shop/data/meta.json").read_text())
    assert meta["counts"]["raw_interactions"] == meta["counts"]["with_metadata"] == 12 * 8
    items = {row["item_id"]: row for row in map(json.loads, Path("runs/shop/data/items.jsonl").open())}
    assert len(items) == 10 and items["i3"]["title"] == "Item number 3"
    assert "price" not in items["i0"]["attributes"] and items["i3"]["attributes"]["price"] == 3.5
    sequences = [json.loads(line) for line in Path("runs/shop/data/sequences.jsonl").open()]
    assert len(sequences) == 12 and sequences[0]["items"] == [f"i{j}" for j in range(8)]


def test_the_documented_conversion_reads_excel_exports_and_names_bad_rows(tmp_path, monkeypatch):
    """An Excel "CSV UTF-8" export (a byte-order mark), prices written "$1,234.50"; a rating cell left empty or a
    header typo stops the script with the file and line, not a traceback."""
    monkeypatch.chdir(tmp_path)
    write_shop_csvs(tmp_path)
    (script,) = blocks("python")
    items = Path("items.csv").read_text().replace("3.5", '"$1,234.50"')
    Path("items.csv").write_text("\ufeff" + items, encoding="utf-8")
    exec(compile(script, str(DOC), "exec"), {})
    rows = [json.loads(line) for line in Path("data/raw/shop/meta_shop.jsonl").read_text().splitlines()]
    assert rows[3]["price"] == 1234.5 and rows[0]["asin"] == "i0" and rows[0]["price"] is None
    events = Path("events.csv").read_text().splitlines()
    events[4] = events[4].replace(",4,", ",,", 1)
    Path("events.csv").write_text("\n".join(events) + "\n")
    with pytest.raises(SystemExit, match=r"events\.csv:5: could not convert string to float: ''"):
        exec(compile(script, str(DOC), "exec"), {})
    Path("events.csv").write_text("\n".join([events[0].replace("rating", "Rating"), *events[1:]]) + "\n")
    with pytest.raises(SystemExit, match=r"events\.csv: the header has no rating"):
        exec(compile(script, str(DOC), "exec"), {})
