"""The LC-Rec / LETTER builder and the exporter back to that format."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from align3gr.cli import main
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import DataError
from align3gr.io import read_json
from data_builders.lcrec import export_lcrec

KEEP = DataConfig(user_k=3, item_k=1)


def write_lcrec(folder: Path, name: str = "Toys") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    inter = {str(u): [(u + k) % 8 for k in range(5)] for u in range(6)}
    inter["5"].insert(2, inter["5"][0])  # a repeated item: the canonical dedupe keeps the first
    record = {"description": ["Soft.", "Red."], "brand": "Lego", "categories": "Toys,Blocks"}
    items = {str(i): {"title": f"Toy {i}", **record} for i in range(8)}
    index = {str(i): [f"<a_{i}>", f"<b_{i % 3}>", f"<c_{i % 2}>"] for i in range(8)}
    users = {"user_explicit_preference": {str(u): [f"Likes toys {u}.", "Plays daily."] for u in range(6)}}
    for kind, document in (("inter", inter), ("item", items), ("index", index), ("user", users)):
        (folder / f"{name}.{kind}.json").write_text(json.dumps(document, indent=1))
    return folder


def test_build(tmp_path):
    build_dataset("lcrec", write_lcrec(tmp_path / "raw"), tmp_path / "out", KEEP)
    dataset = load_dataset(tmp_path / "out")
    assert dataset.sequences["0"].items == ["0", "1", "2", "3", "4"]
    assert dataset.sequences["5"].items == ["5", "6", "7", "0", "1"]
    assert dataset.sequences["0"].timestamps == [0, 1, 2, 3, 4]
    item = dataset.items["3"]
    assert (item.title, item.description, item.categories) == ("Toy 3", "Soft. Red.", ["Toys", "Blocks"])
    assert item.attributes == {"brand": "Lego", "lcrec_index": ["<a_3>", "<b_0>", "<c_1>"]}
    assert dataset.users["2"].profile.startswith("Likes toys 2. Plays daily.")


def test_plain_profile_shapes(tmp_path):
    source = write_lcrec(tmp_path / "raw")
    (source / "Toys.user.json").write_text(json.dumps({str(u): {"profile": f"P{u}"} for u in range(6)}))
    assert build_dataset("lcrec", source, tmp_path / "a", KEEP).dataset.users["1"].profile.startswith("P1")
    (source / "Toys.user.json").write_text(json.dumps({str(u): f"Q{u}" for u in range(6)}))
    assert build_dataset("lcrec", source, tmp_path / "b", KEEP).dataset.users["1"].profile.startswith("Q1")


def test_export_round_trip(tmp_path):
    build_dataset("movielens", write_small_movielens(tmp_path / "ml"), tmp_path / "canonical")
    original = load_dataset(tmp_path / "canonical")
    first = next(iter(original.items.values()))
    first.categories = ["Clothing, Shoes & Jewelry", "Shoes"]  # LC-Rec's comma-joined string would split it
    codes = {item_id: [f"<a_{k}>", f"<b_{k % 4}>"] for k, item_id in enumerate(original.items)}
    written = export_lcrec(original, tmp_path / "export", "ML", item_codes=codes)
    assert sorted(p.name for p in written) == sorted(
        f"ML.{k}.json" for k in ("inter", "item", "user", "id_map", "index")
    )
    inter = json.loads((tmp_path / "export" / "ML.inter.json").read_text())
    assert list(inter) == [str(k) for k in range(len(original.sequences))]
    assert all(isinstance(i, int) for seq in inter.values() for i in seq)
    item_file = json.loads((tmp_path / "export" / "ML.item.json").read_text())
    assert item_file["0"]["categories"] == "Clothing, Shoes & Jewelry,Shoes"  # LC-Rec's own form, for its scripts
    rebuilt = build_dataset("lcrec", tmp_path / "export", tmp_path / "again", KEEP).dataset
    assert {u: s.items for u, s in rebuilt.sequences.items()} == {u: s.items for u, s in original.sequences.items()}
    assert {i: (x.title, x.categories) for i, x in rebuilt.items.items()} == {
        i: (x.title, x.categories) for i, x in original.items.items()
    }
    assert all(rebuilt.items[i].attributes["lcrec_index"] == codes[i] for i in codes)
    assert (
        main(["data", "export", "--data", str(tmp_path / "again"), "--out", str(tmp_path / "cli"), "--name", "X"]) == 0
    )
    assert json.loads((tmp_path / "cli" / "X.index.json").read_text()) == json.loads(
        (tmp_path / "export" / "ML.index.json").read_text()
    )


def write_small_movielens(folder: Path) -> Path:
    folder.mkdir()
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    (folder / "u.data").write_text(
        "".join(f"{u}\t{i}\t{1 + (u * i) % 5}\t{100 * i + u}\n" for u in range(1, 7) for i in range(1, 7))
    )
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1999)||||{flags}\n" for i in range(1, 7)))
    (folder / "u.user").write_text("".join(f"{u}|30|F|artist|0\n" for u in range(1, 7)))
    return folder


def test_export_needs_a_code_for_every_item(tmp_path):
    build_dataset("lcrec", write_lcrec(tmp_path / "raw"), tmp_path / "out", KEEP)
    dataset = load_dataset(tmp_path / "out")
    with pytest.raises(DataError, match="item '7' has no code"):
        export_lcrec(dataset, tmp_path / "export", "T", item_codes={str(i): ["<a_1>"] for i in range(7)})
    assert not list((tmp_path / "export").glob("T.*"))


@pytest.mark.parametrize(
    ("kind", "text", "pattern"),
    [
        ("inter", '{"0": [1, 2,\n', r"Toys\.inter\.json:2: malformed JSON"),
        ("inter", '{"0": 5}', r"Toys\.inter\.json: user '0': expected a list of item indices"),
        ("inter", '{"0": [1, true]}', r"Toys\.inter\.json: user '0': expected a list of item indices"),
        (
            "item",
            '{"0": {"title": "A"}}',
            r"Toys\.inter\.json: interaction of user '0' names item '1', which has no metadata",
        ),
        ("item", '{"0": {"description": "no title"}}', r"Toys\.item\.json: item '0': missing required field 'title'"),
        ("index", '{"0": "<a_1>"}', r"Toys\.index\.json: item '0': expected a list of code strings"),
        ("user", '{"0": {"age": 3}}', r"Toys\.user\.json: user '0': expected a profile string"),
        ("id_map", "[]", r"Toys\.id_map\.json: expected a JSON object of 'users' and 'items' ID maps, got list"),
        ("id_map", '{"users": []}', r"Toys\.id_map\.json: expected a JSON object of users IDs, got list"),
        ("id_map", '{"items": {"0": ["x"]}}', r"Toys\.id_map\.json: items index '0': expected the original ID"),
        ("id_map", '{"users": {"0": null}}', r"Toys\.id_map\.json: users index '0': expected the original ID"),
        ("item", '{"0": {"title": "\\udc80"}}', r"Toys\.item\.json: malformed JSON \(a lone surrogate"),
        ("item", b'{"0": {"title": "\xff"}}', r"Toys\.item\.json:1: not UTF-8 text \(byte 0xff\)"),
    ],
)
def test_bad_input(tmp_path, kind, text, pattern):
    source = write_lcrec(tmp_path / "raw")
    path = source / f"Toys.{kind}.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        build_dataset("lcrec", source, tmp_path / "out", KEEP)
    assert not (tmp_path / "out").exists()


def test_several_datasets_need_a_name(tmp_path):
    source = write_lcrec(write_lcrec(tmp_path / "raw", "Toys"), "Games")
    with pytest.raises(DataError, match="found datasets: Games, Toys"):
        build_dataset("lcrec", source, tmp_path / "out", KEEP)
    assert build_dataset("lcrec", source, tmp_path / "out", KEEP, {"name": "Games"}).dataset.sequences


def test_export_replaces_an_earlier_export_and_names_a_bad_code_table(tmp_path, capsys):
    build_dataset("movielens", write_small_movielens(tmp_path / "ml"), tmp_path / "out")
    dataset = load_dataset(tmp_path / "out")
    export_lcrec(dataset, tmp_path / "export", "T", item_codes={i: ["<a_1>", f"<b_{i}>"] for i in dataset.items})
    export_lcrec(dataset, tmp_path / "export", "T")
    assert not (tmp_path / "export" / "T.index.json").exists()  # the first export's codes would pair with these items
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        f"T.{k}.json" for k in ("id_map", "inter", "item", "user")
    ]
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match=r"afile: the export folder is a file"):
        export_lcrec(dataset, tmp_path / "afile", "T")
    (tmp_path / "codes.json").write_text('["<a_1>"]')
    with pytest.raises(DataError, match=r"codes\.json: expected an item code table"):
        export_lcrec(dataset, tmp_path / "export", "T", read_json(tmp_path / "codes.json"), tmp_path / "codes.json")
    (tmp_path / "codes.json").write_text(json.dumps({next(iter(dataset.items)): ["<a_1>"]}))
    with pytest.raises(DataError, match=rf"codes\.json: item '{list(dataset.items)[1]}' has no code"):
        export_lcrec(dataset, tmp_path / "export", "T", read_json(tmp_path / "codes.json"), tmp_path / "codes.json")
    args = ["data", "export", "--data", str(tmp_path / "out"), "--out", str(tmp_path / "cli"), "--name", "T"]
    args.append("--item-codes")
    (tmp_path / "codes.json").write_text('{"0": ')
    assert main([*args, str(tmp_path / "codes.json")]) == 2  # a malformed table: an error naming it, no traceback
    codes = {item: ["<a_1>", f"<b_{k}>"] for k, item in enumerate(dataset.items)}
    (tmp_path / "codes.json").write_text(json.dumps(codes))
    assert main([*args, str(tmp_path / "codes.json")]) == 0
    first = next(iter(codes))
    (tmp_path / "codes.json").write_text(json.dumps({**codes, first: ["<a_01>", "<b_0>"]}))
    assert main([*args, str(tmp_path / "codes.json")]) == 2  # the checks of every stage reading a code table
    assert f"item '{first}' level 0: expected a token `<a_N>`" in capsys.readouterr().err


def test_nan_fields_are_no_value(tmp_path):
    """LC-Rec item files written by Python's json from pandas hold NaN for missing values: no attribute, no text."""
    folder = write_lcrec(tmp_path / "raw")
    items = json.loads((folder / "Toys.item.json").read_text())
    items["3"] |= {"brand": float("nan"), "description": float("nan")}
    (folder / "Toys.item.json").write_text(json.dumps(items))
    build_dataset("lcrec", folder, tmp_path / "out", KEEP)
    lines = (tmp_path / "out" / "items.jsonl").read_text().splitlines()
    item = next(row for row in map(orjson.loads, lines) if row["item_id"] == "3")
    assert item["description"] == "" and item["attributes"] == {"lcrec_index": ["<a_3>", "<b_0>", "<c_1>"]}


def test_a_source_profile_without_a_full_stop_ends_its_sentence(tmp_path):
    source = write_lcrec(tmp_path / "raw")
    (source / "Toys.user.json").write_text(json.dumps({str(u): f"I like toys {u}" for u in range(6)}))
    profile = build_dataset("lcrec", source, tmp_path / "a", KEEP).dataset.users["1"].profile
    assert profile.startswith("I like toys 1. ") and profile[len("I like toys 1. ")].isupper()


def test_export_never_replaces_lc_rec_files_it_did_not_write(tmp_path, capsys):
    """Exporting a dataset back into its own LC-Rec source folder, under the source's name, would replace the raw
    files with the filtered, re-indexed ones: refused (an earlier export, which wrote NAME.id_map.json, is replaced)."""
    source = write_lcrec(tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    build_dataset("lcrec", source, tmp_path / "ds", KEEP)
    argv = ["data", "export", "--data", str(tmp_path / "ds"), "--out", str(source), "--name", "Toys"]
    assert main(argv) == 2
    assert "holds LC-Rec files Toys.{inter,item,user,index}.json that no export wrote" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    again = ["data", "export", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "e"), "--name", "Toys"]
    assert main(again) == 0 and main(again) == 0
