"""MovieLens-100K from the RecBole wheel: counts, leave-one-out split, determinism, and the other layouts."""

from __future__ import annotations

import codecs
import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_data_errors import write_small_grouplens

from align3gr.cli import main
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import DataError

RECBOLE_ML100K = Path(importlib.util.find_spec("recbole").origin).parent / "dataset_example" / "ml-100k"


def pandas_kcore(frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """An independent 5-core: stable chronological sort, first of repeated pairs, iterate to a fixed point."""
    frame = frame.sort_values(["user", "timestamp"], kind="stable").drop_duplicates(["user", "item"], keep="first")
    while True:
        users = frame.groupby("user")["item"].transform("size")
        items = frame.groupby("item")["user"].transform("size")
        keep = (users >= k) & (items >= k)
        if keep.all():
            return frame
        frame = frame[keep]


def test_counts_match_an_independent_pandas_kcore(ml100k):
    raw = pd.read_csv(RECBOLE_ML100K / "ml-100k.inter", sep="\t", dtype=str)
    raw.columns = ["user", "item", "rating", "timestamp"]
    raw["timestamp"] = raw["timestamp"].astype(float).astype(int)
    expected = pandas_kcore(raw)
    dataset = load_dataset(ml100k)
    assert dataset.meta["counts"]["interactions"] == len(expected)
    assert len(dataset.sequences) == expected["user"].nunique()
    assert len(dataset.items) == expected["item"].nunique()
    for user, group in expected.groupby("user"):
        assert dataset.sequences[user].items == list(group["item"])


def test_leave_one_out_targets_are_the_chronologically_last(ml100k):
    raw = pd.read_csv(RECBOLE_ML100K / "ml-100k.inter", sep="\t", dtype=str)
    raw.columns = ["user", "item", "rating", "timestamp"]
    raw["timestamp"] = raw["timestamp"].astype(float).astype(int)
    kept = pandas_kcore(raw)
    last_two = kept.groupby("user").tail(2).groupby("user")["item"].apply(list)
    dataset = load_dataset(ml100k)
    test = {e.user_id: e for e in dataset.examples("test")}
    valid = {e.user_id: e for e in dataset.examples("valid")}
    assert len(test) == len(valid) == len(dataset.sequences)
    for user, (valid_item, test_item) in last_two.items():
        assert test[user].target == test_item
        assert valid[user].target == valid_item
        assert test[user].history[-1] == valid_item
        seq = dataset.sequences[user]
        assert seq.timestamps[-1] == max(seq.timestamps)


def test_histories_are_the_last_20_items_before_each_target_and_targets_never_leak(ml100k):
    """Every example of every split, rebuilt from the users' whole sequences: train predicts each item of the training
    part (all but the last two) from the up to 20 items before it, valid the second-to-last item, test the last."""
    dataset = load_dataset(ml100k)
    assert dataset.meta["max_history"] == 20
    expected = {"train": [], "valid": [], "test": []}
    for user, seq in dataset.sequences.items():
        items = list(seq.items)
        targets = {"train": range(1, len(items) - 2), "valid": [len(items) - 2], "test": [len(items) - 1]}
        for split, positions in targets.items():
            expected[split] += [(user, items[max(0, t - 20) : t], items[t]) for t in positions]
    for split, examples in expected.items():
        got = [(e.user_id, list(e.history), e.target) for e in dataset.examples(split)]
        assert got == examples, split
    assert max(len(history) for _, history, _ in expected["train"]) == 20  # the cut applies
    assert sum(len(seq.items) - 3 for seq in dataset.sequences.values()) == len(expected["train"])
    test_targets = {e.user_id: e.target for e in dataset.examples("test")}
    valid_targets = {e.user_id: e.target for e in dataset.examples("valid")}
    for split in ("train", "valid", "test"):
        for example in dataset.examples(split):
            assert example.target not in example.history
    for example in dataset.examples("train"):
        assert test_targets[example.user_id] not in (*example.history, example.target)
        assert valid_targets[example.user_id] not in (*example.history, example.target)
    for user in dataset.sequences:
        assert test_targets[user] not in dataset.train_items(user)


def test_items_users_and_feedback(ml100k):
    dataset = load_dataset(ml100k)
    item = dataset.items["12"]
    assert item.title == "The Usual Suspects"
    assert item.categories == ["Crime", "Thriller"]
    assert item.attributes["year"] == 1995
    assert dataset.users["1"].profile.startswith("A 24-year-old male technician.")
    seq = dataset.sequences["1"]
    levels = {1: "disliked", 2: "neutral", 3: "neutral", 4: "liked", 5: "liked"}
    assert seq.feedback == [levels[r] for r in seq.ratings]
    meta = dataset.meta
    assert meta["builder"]["name"] == "movielens"
    assert {s["file"] for s in meta["sources"]} == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}
    assert all(len(s["sha256"]) == 64 for s in meta["sources"])
    assert meta["filters"]["user_k"] == meta["filters"]["item_k"] == 5


def test_building_twice_is_byte_identical(ml100k, tmp_path):
    again = tmp_path / "again"
    build_dataset("movielens", "recbole", again)
    names = sorted(p.name for p in ml100k.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (ml100k / name).read_bytes() == (again / name).read_bytes(), name


def test_rebuilding_into_the_same_folder_reuses_it(ml100k, tmp_path):
    """On a copy: the session's `ml100k` is shared by every test of the worker and must not be rewritten."""
    folder = tmp_path / "data"
    shutil.copytree(ml100k, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = build_dataset("movielens", "recbole", folder)
    assert result.up_to_date
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def write_grouplens_100k(folder: Path) -> None:
    """Re-express RecBole's ml-100k in GroupLens' own u.data / u.item / u.user layout."""
    folder.mkdir()
    inter = pd.read_csv(RECBOLE_ML100K / "ml-100k.inter", sep="\t", dtype=str)
    inter.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary"]
    genres += ["Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller"]
    genres += ["War", "Western"]
    with open(folder / "u.item", "w", encoding="latin-1") as handle:
        items = pd.read_csv(RECBOLE_ML100K / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
        for item_id, title, year, classes in items.itertuples(index=False):
            flags = ["1" if g in classes.split() else "0" for g in genres]
            dated = f"{title} ({year})" if year.isdigit() else title
            handle.write("|".join([item_id, dated, "", "", "", *flags]) + "\n")
    users = pd.read_csv(RECBOLE_ML100K / "ml-100k.user", sep="\t", dtype=str)
    users.to_csv(folder / "u.user", sep="|", header=False, index=False)


def test_grouplens_layout_gives_the_same_dataset(ml100k, tmp_path):
    write_grouplens_100k(tmp_path / "ml-100k")
    result = build_dataset("movielens", tmp_path / "ml-100k", tmp_path / "out")
    reference = load_dataset(ml100k)
    assert result.dataset.sequences == reference.sequences
    assert {i: (x.title, x.categories) for i, x in result.dataset.items.items()} == {
        i: (x.title, x.categories) for i, x in reference.items.items()
    }


def test_grouplens_1m_layout(tmp_path):
    source = tmp_path / "ml-1m"
    source.mkdir()
    movies = ["1::Toy Story (1995)::Animation|Children's|Comedy", "2::Jumanji (1995)::Adventure|Children's|Fantasy"]
    movies += [f"{i}::Movie {i}, The (1999)::Drama" for i in range(3, 9)]
    (source / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    users = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]
    (source / "users.dat").write_text("\n".join(users) + "\n")
    ratings = [f"{u}::{i}::{1 + (u + i) % 5}::{978300000 + 10 * i + u}" for u in (1, 2, 3) for i in range(1, 9)]
    (source / "ratings.dat").write_text("\n".join(ratings) + "\n")
    assert main(["data", "build", "--builder", "movielens", "--source", str(source), "--out", str(tmp_path / "o"),
                 "--user-k", "3", "--item-k", "3"]) == 0  # fmt: skip
    dataset = load_dataset(tmp_path / "o")
    assert len(dataset.sequences) == 3 and len(dataset.items) == 8
    assert dataset.items["3"].title == "The Movie 3"
    assert dataset.items["1"].categories == ["Animation", "Children's", "Comedy"]
    assert dataset.users["1"].profile.startswith("A female K-12 student aged under 18. ")
    assert dataset.users["2"].attributes["occupation"] == "self-employed"
    assert dataset.sequences["1"].items == [str(i) for i in range(1, 9)]


def test_recbole_ml1m_atomic_files_decode_the_user_codes(tmp_path):
    """RecBole's ml-1m `.user` keeps ml-1m's age and occupation codes: the profile gives their meaning, and a code
    outside the ml-1m README's tables is an error naming the file and line."""
    source = tmp_path / "ml-1m"
    source.mkdir()
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq"]
    items += [f"{i}\tMovie {i}\t1999\tDrama" for i in range(1, 9)]
    (source / "ml-1m.item").write_text("\n".join(items) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users += ["1\t1\tF\t10\t48067", "2\t56\tM\t16\t70072", "3\t25\tM\t15\t55117"]
    (source / "ml-1m.user").write_text("\n".join(users) + "\n")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{1 + (u + i) % 5}\t{978300000 + 10 * i + u}" for u in (1, 2, 3) for i in range(1, 9)]
    (source / "ml-1m.inter").write_text("\n".join(inter) + "\n")
    build = ["data", "build", "--builder", "movielens", "--source", str(source), "--user-k", "3", "--item-k", "3"]
    assert main([*build, "--out", str(tmp_path / "o")]) == 0
    dataset = load_dataset(tmp_path / "o")
    assert dataset.users["1"].profile.startswith("A female K-12 student aged under 18. ")
    assert dataset.users["2"].attributes["occupation"] == "self-employed"
    (source / "ml-1m.user").write_text("\n".join([*users, "4\t30\tM\t3\t12345"]) + "\n")
    with pytest.raises(DataError, match=r"ml-1m\.user:5: unknown ml-1m age or occupation code \(age '30'"):
        build_dataset("movielens", source, tmp_path / "o2", DataConfig(user_k=3, item_k=3))


def write_small_100k(folder: Path, bom: bytes = b"") -> Path:
    """A GroupLens ml-100k folder of 5 users who rated 5 items, `u.item` in Latin-1 ("é" one byte, as GroupLens'),
    each file starting with `bom`."""
    folder.mkdir()
    data = "".join(f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + 10 * i + u}\n" for u in range(1, 6) for i in range(1, 6))
    flags = "|".join(["0"] * 18 + ["1"])
    items = "".join(f"{i}|Caf\u00e9 {i} (1990)|01-Jan-1990||http://x|{flags}\n" for i in range(1, 6))
    users = "".join(f"{u}|{20 + u}|F|writer|1000{u}\n" for u in range(1, 6))
    for name, text, encoding in (("u.data", data, "utf-8"), ("u.item", items, "latin-1"), ("u.user", users, "utf-8")):
        (folder / name).write_bytes(bom + text.encode(encoding))
    return folder


def test_a_byte_order_mark_at_the_start_of_a_file_is_skipped(ml100k, tmp_path):
    """GroupLens files and RecBole headers starting with a UTF-8 byte order mark give the dataset of the same files
    without it (not a user "\ufeff1"); the Latin-1 `u.item` still reads as Latin-1."""
    config = DataConfig(user_k=5, item_k=5)
    plain = build_dataset("movielens", write_small_100k(tmp_path / "plain"), tmp_path / "plain_out", config).dataset
    marked = write_small_100k(tmp_path / "marked", codecs.BOM_UTF8)
    dataset = build_dataset("movielens", marked, tmp_path / "marked_out", config).dataset
    assert list(dataset.sequences) == list(plain.sequences) == ["1", "2", "3", "4", "5"]
    assert dataset.items["1"].title == "Caf\u00e9 1"
    for name in ("items.jsonl", "users.jsonl", "sequences.jsonl", "intentions.jsonl", "preferences.jsonl"):
        assert (tmp_path / "plain_out" / name).read_bytes() == (tmp_path / "marked_out" / name).read_bytes(), name
    recbole = tmp_path / "recbole"
    recbole.mkdir()
    for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        (recbole / name).write_bytes(codecs.BOM_UTF8 + (RECBOLE_ML100K / name).read_bytes())
    assert build_dataset("movielens", recbole, tmp_path / "recbole_out").dataset.sequences == (
        load_dataset(ml100k).sequences
    )


def test_of_several_recbole_inter_files_the_one_named_like_the_others_is_read(tmp_path):
    source = tmp_path / "ml"
    source.mkdir()
    for name in ("item", "user", "inter"):
        (source / f"ml.{name}").write_bytes((RECBOLE_ML100K / f"ml-100k.{name}").read_bytes())
    (source / "ml.train.inter").write_bytes((source / "ml.inter").read_bytes())
    result = build_dataset("movielens", source, tmp_path / "out")
    assert [s["file"] for s in result.dataset.meta["sources"]] == ["ml.inter", "ml.item", "ml.user"]
    (source / "ml.inter").rename(source / "ml.test.inter")
    with pytest.raises(DataError, match=r"several RecBole \*\.inter files \(ml\.test\.inter, ml\.train\.inter\)"):
        build_dataset("movielens", source, tmp_path / "out2")


def test_readme_command_with_the_recipe_config(tmp_path, capsys):
    config = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "ml100k.yaml"
    assert main(["data", "build", "--config", str(config), "--out", str(tmp_path / "data"), "--item-k", "10"]) == 0
    printed = capsys.readouterr().out
    assert "movielens; built in" in printed and "interactions" in printed
    dataset = load_dataset(tmp_path / "data")
    assert dataset.meta["filters"]["item_k"] == 10  # the flag overrides the YAML
    assert dataset.meta["filters"]["user_k"] == 5
    assert main(["data", "stats", str(tmp_path / "data")]) == 0
    assert f"{len(dataset.items):,}" in capsys.readouterr().out


def test_a_local_folder_named_recbole_is_read_not_the_packaged_copy(tmp_path, monkeypatch, caplog):
    """`--source ./recbole` reaches the builder as `recbole`: a folder of that name is the user's data, read with a
    warning, never silently replaced by the package's MovieLens-100K."""
    write_small_grouplens(tmp_path / "recbole")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING"):
        result = build_dataset("movielens", "./recbole", tmp_path / "out")
    assert result.statistics["users"] < 943 and "not the recbole package's MovieLens-100K" in caplog.text


def test_another_builder_without_a_source_is_told_to_give_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "build", "--builder", "amazon", "--out", str(tmp_path / "o")]) == 2
    assert "no --source given (`source:` in a config)" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("source:\n  builder: amazon\n  source: shop\n  options:\n    reviews: 5\n")
    assert main(["data", "build", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "section 'source': options={'reviews': 5}: expected dict[str, str]" in capsys.readouterr().err
