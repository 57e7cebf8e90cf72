"""Bad input: each case gives a clear error naming file and line or field, and leaves no output behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from align3gr.cli import main
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError, DataError

GENRE_FLAGS = "|".join(["0"] * 18 + ["1"])


def write_small_grouplens(folder: Path, users: int = 6, items: int = 6) -> Path:
    """A valid ml-100k-layout folder where every user rated every item (so 5-core keeps all)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [
        f"{u}\t{i}\t{1 + (u * i) % 5}\t{880000000 + 100 * i + u}"
        for u in range(1, users + 1)
        for i in range(1, items + 1)
    ]
    (folder / "u.data").write_text("\n".join(data) + "\n")
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1990)||||{GENRE_FLAGS}\n" for i in range(1, items + 1)))
    (folder / "u.user").write_text("".join(f"{u}|{20 + u}|M|writer|0000{u}\n" for u in range(1, users + 1)))
    return folder


def edit_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def assert_fails_cleanly(tmp_path: Path, source: Path, pattern: str, config: DataConfig | None = None) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=pattern):
        build_dataset("movielens", source, out, config)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize(
    ("file", "line", "text", "pattern"),
    [
        ("u.data", 4, "1\t4\t3", r"u\.data:4: expected 4 fields"),
        ("u.data", 7, "2\t1\tgood\t880000102", r"u\.data:7: rating must be a number, got 'good'"),
        ("u.data", 9, "2\t3\t4\tyesterday", r"u\.data:9: timestamp must be a number, got 'yesterday'"),
        (
            "u.data",
            12,
            "2\t99\t4\t880000999",
            r"u\.data:12: interaction of user '2' names item '99', which has no metadata",
        ),
        ("u.item", 3, f"2|Copy (1990)||||{GENRE_FLAGS}", r"u\.item:3: duplicate item ID '2'"),
        ("u.item", 2, "2|Two (1990)||||0|1", r"u\.item:2: expected 24 fields separated by '\|', found 7"),
        ("u.user", 2, "1|30|F|artist|00001", r"u\.user:2: duplicate user ID '1'"),
        ("u.data", 3, "1\t3\t4\t1e30", r"u\.data:3: timestamp '1e30' is beyond the 64-bit range"),
        ("u.data", 3, "1\t3\t4\t" + "9" * 400, r"u\.data:3: timestamp '9+' is beyond the 64-bit range"),
    ],
)
def test_bad_grouplens_input(tmp_path, file, line, text, pattern):
    source = write_small_grouplens(tmp_path / "raw")
    edit_line(source / file, line, text)
    assert_fails_cleanly(tmp_path, source, pattern)


def test_missing_metadata_can_be_dropped_instead(tmp_path):
    source = write_small_grouplens(tmp_path / "raw")
    edit_line(source / "u.data", 12, "2\t99\t4\t880000999")
    result = build_dataset("movielens", source, tmp_path / "out", DataConfig(missing_metadata="drop"))
    assert "99" not in result.dataset.items
    assert result.dataset.meta["counts"]["with_metadata"] == 35


def test_a_metadata_drop_leaving_nothing_stops_with_the_counts(tmp_path):
    source = write_small_grouplens(tmp_path / "raw")
    (source / "u.item").write_text("".join(f"{i}|Movie {i} (1990)||||{GENRE_FLAGS}\n" for i in range(101, 107)))
    assert_fails_cleanly(
        tmp_path,
        source,
        r"u\.data: no interaction's item has metadata.*: 36 raw interactions \(of 6 items\), with metadata 0",
        DataConfig(missing_metadata="drop"),
    )


def test_missing_required_column_in_recbole_header(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    (source / "x.inter").write_text("user_id:token\trating:float\ttimestamp:float\n1\t3\t5\n")
    (source / "x.item").write_text("item_id:token\tmovie_title:token_seq\n1\tA\n")
    (source / "x.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\n1\t20\tM\tother\n")
    assert_fails_cleanly(tmp_path, source, r"x\.inter:1: missing required column 'item_id'")


def test_kcore_leaving_nothing_says_which_filter_and_counts(tmp_path):
    source = write_small_grouplens(tmp_path / "raw", users=4, items=4)
    with pytest.raises(
        DataError, match=r"users >= 5, items >= 5.*before it 16 interactions, 4 users, 4 items.*after it 0"
    ):
        build_dataset("movielens", source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_builder_and_options():
    with pytest.raises(ConfigError, match="unknown builder 'netflix'; known builders: amazon, lcrec, movielens, yelp"):
        build_dataset("netflix", "x", "y")
    with pytest.raises(ConfigError, match="builder 'movielens' has no option 'flavour'"):
        build_dataset("movielens", "recbole", "y", builder_options={"flavour": "1m"})
    with pytest.raises(ConfigError, match="user_k=2"):
        build_dataset("movielens", "recbole", "y", DataConfig(user_k=2))


def test_output_folder_holding_a_different_dataset(tmp_path):
    source = write_small_grouplens(tmp_path / "raw")
    out = tmp_path / "out"
    build_dataset("movielens", source, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match="already holds a different dataset"):
        build_dataset("movielens", source, out, DataConfig(item_k=3))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    replaced = build_dataset("movielens", source, out, DataConfig(item_k=3), overwrite=True)
    assert not replaced.up_to_date and replaced.dataset.meta["filters"]["item_k"] == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no dataset"):
        build_dataset("movielens", source, tmp_path / "other")
    with pytest.raises(DataError, match="not empty and holds no dataset"):  # --overwrite replaces datasets only
        build_dataset("movielens", source, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    model = tmp_path / "sft"  # another stage's output: its meta.json is no dataset's
    model.mkdir()
    (model / "meta.json").write_text('{"fingerprint": "x", "steps": 3}')
    with pytest.raises(DataError, match="holds another stage's output, not a dataset"):
        build_dataset("movielens", source, model, overwrite=True)
    assert (model / "meta.json").is_file()
    (out / "meta.json").write_text('{"fingerprint": "cut sh')  # a dataset whose meta.json is corrupt: replaceable
    assert not build_dataset("movielens", source, out, overwrite=True).up_to_date


@pytest.mark.parametrize("out", [".", ".."], ids=["source folder", "its parent"])
def test_output_folder_holding_the_raw_files_is_refused(tmp_path, out):
    """A build replaces its output folder whole: an --out that is or holds the source would delete the raw files."""
    source = write_small_grouplens(tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    with pytest.raises(DataError, match="lies in the output folder"):
        build_dataset("movielens", source, source / out, overwrite=True)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    source = write_small_grouplens(tmp_path / "raw")
    edit_line(source / "u.data", 4, "1\t4\t3")
    code = main(["data", "build", "--builder", "movielens", "--source", str(source), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "u.data:4: expected 4 fields" in capsys.readouterr().err
    assert main(["data", "build", "--builder", "nope", "--source", "x", "--out", str(tmp_path / "o")]) == 2


def test_loader_validates_the_canonical_files(tmp_path):
    source = write_small_grouplens(tmp_path / "raw")
    good = tmp_path / "good"
    build_dataset("movielens", source, good)

    def corrupt(name: str, line: int, text: str) -> Path:
        bad = Path(tempfile.mkdtemp(dir=tmp_path))
        for path in good.iterdir():
            (bad / path.name).write_bytes(path.read_bytes())
        edit_line(bad / name, line, text)
        return bad

    with pytest.raises(DataError, match=r"items\.jsonl:2: malformed JSON"):
        load_dataset(corrupt("items.jsonl", 2, '{"item_id": "2", "title": '))
    with pytest.raises(DataError, match=r"items\.jsonl:3: duplicate item_id '1' \(first on line 1\)"):
        load_dataset(corrupt("items.jsonl", 3, json.dumps({"item_id": "1", "title": "x", "categories": []})))
    with pytest.raises(DataError, match=r"items\.jsonl:1: missing required field 'title'"):
        load_dataset(corrupt("items.jsonl", 1, json.dumps({"item_id": "1"})))
    with pytest.raises(DataError, match=r"items\.jsonl:1: field 'description' must be a string"):
        load_dataset(corrupt("items.jsonl", 1, json.dumps({"item_id": "1", "title": "x", "description": ["a"]})))
    row = json.loads((good / "sequences.jsonl").read_text().splitlines()[0])
    row["items"][0] = "404"
    with pytest.raises(DataError, match=r"sequences\.jsonl:1: item '404' is not in items\.jsonl"):
        load_dataset(corrupt("sequences.jsonl", 1, json.dumps(row)))
    row = json.loads((good / "sequences.jsonl").read_text().splitlines()[0])
    row["ratings"][2] = "five"
    with pytest.raises(DataError, match=r"sequences\.jsonl:1: field 'ratings' holds 'five'"):
        load_dataset(corrupt("sequences.jsonl", 1, json.dumps(row)))
    row = json.loads((good / "sequences.jsonl").read_text().splitlines()[0])
    row["timestamps"] = row["timestamps"][::-1]
    with pytest.raises(DataError, match="not in chronological order"):
        load_dataset(corrupt("sequences.jsonl", 1, json.dumps(row)))
    row = json.loads((good / "sequences.jsonl").read_text().splitlines()[0])
    row["ratings"][2] = 10**400
    with pytest.raises(DataError, match=r"sequences\.jsonl:1: field 'ratings' holds a non-finite number"):
        load_dataset(corrupt("sequences.jsonl", 1, json.dumps(row)))
    row = json.loads((good / "intentions.jsonl").read_text().splitlines()[0])
    bad_intentions = load_dataset(corrupt("intentions.jsonl", 2, json.dumps(row | {"user_id": [row["user_id"]]})))
    with pytest.raises(DataError, match=r"intentions\.jsonl:2: fields 'user_id' and 'item_id' must be strings"):
        list(bad_intentions.intentions)  # intentions are checked as they are read: most stages never read them
    with pytest.raises(DataError, match=r"intentions\.jsonl:2: fields 'user_id' and 'item_id' must be strings"):
        bad_intentions.statistics()  # what `align3gr data stats` prints: a checking pass over every row
    with pytest.raises(DataError, match=r"preferences\.jsonl:1: expected 'user_id' of a user with a sequence"):
        load_dataset(corrupt("preferences.jsonl", 1, json.dumps({"user_id": {}, "statement": "x"})))
    users_only = corrupt("preferences.jsonl", 1, json.dumps({"user_id": "sequenceless", "statement": "x"}))
    with open(users_only / "users.jsonl", "a") as handle:  # a known user without a sequence: SFT's C3 row would fail
        handle.write(json.dumps({"user_id": "sequenceless"}) + "\n")
    with pytest.raises(DataError, match=r"preferences\.jsonl:1: expected 'user_id' of a user with a sequence"):
        load_dataset(users_only)
    row = json.loads((good / "sequences.jsonl").read_text().splitlines()[0])
    blank_first = corrupt("sequences.jsonl", 1, "\n\n" + json.dumps(row | {"user_id": "nobody"}))
    with pytest.raises(DataError, match=r"sequences\.jsonl:3: user 'nobody' is not in users\.jsonl"):
        load_dataset(blank_first)
    with pytest.raises(DataError, match="no meta.json"):
        load_dataset(tmp_path / "raw")


def test_integer_timestamps_are_kept_exactly_and_unusual_ids_sort(tmp_path):
    """Nanosecond timestamps past 2**53 (where a float would round them) and a user ID of a digit that `int` does
    not read ('²') build."""
    source = write_small_grouplens(tmp_path / "raw")
    lines = (source / "u.data").read_text().splitlines()
    exact = 1_400_000_000_123_456_789
    lines = [f"{u}\t{i}\t{r}\t{exact + int(t)}" for u, i, r, t in (line.split("\t") for line in lines)]
    (source / "u.data").write_text(
        "\n".join(line.replace("6\t", "\u00b2\t", 1) if line.startswith("6\t") else line for line in lines) + "\n"
    )
    (source / "u.user").write_text((source / "u.user").read_text().replace("6|26|", "\u00b2|26|"))
    dataset = build_dataset("movielens", source, tmp_path / "out").dataset
    assert dataset.sequences["1"].timestamps[0] == exact + 880000101
    assert list(dataset.sequences)[-1] == "\u00b2"


def test_ids_equal_as_numbers_sort_the_same_under_any_hash_seed(tmp_path):
    """Items "1", "01" and "001" come from a set, whose order follows the hash seed: the ID itself breaks the tie."""
    source = write_small_grouplens(tmp_path / "raw", items=5)
    ids = {"1": "1", "2": "01", "3": "001", "4": "7", "5": "07"}
    data = [line.split("\t") for line in (source / "u.data").read_text().splitlines()]
    (source / "u.data").write_text("".join(f"{u}\t{ids[i]}\t{r}\t{t}\n" for u, i, r, t in data))
    (source / "u.item").write_text("".join(f"{i}|Movie {i} (1990)||||{GENRE_FLAGS}\n" for i in ids.values()))
    build = "import sys\nfrom align3gr.data.build import build_dataset\nbuild_dataset('movielens', *sys.argv[1:])\n"
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", build, str(source), str(out)], env=env, check=True)
    items = [json.loads(line)["item_id"] for line in (tmp_path / "seed1" / "items.jsonl").open()]
    assert items == ["001", "01", "1", "07", "7"]
    for name in sorted(p.name for p in (tmp_path / "seed1").iterdir()):
        assert (tmp_path / "seed1" / name).read_bytes() == (tmp_path / "seed2" / name).read_bytes(), name


def test_a_killed_build_leaves_nothing_and_the_rerun_succeeds(tmp_path):
    source = write_small_grouplens(tmp_path / "raw")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{socket.gethostname()}-{gone.stdout.strip()}-0000abcd"  # a killed build's
    stale.mkdir()
    (stale / "items.jsonl").write_text('{"item_id": "1", "ti')
    result = build_dataset("movielens", source, tmp_path / "out")
    assert not stale.exists()
    assert load_dataset(tmp_path / "out").sequences == result.dataset.sequences
