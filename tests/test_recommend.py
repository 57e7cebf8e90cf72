"""`align3gr recommend` on a small evaluated run (the run of test_push: a tiny model with crafted SCIDs, evaluated on
the test split): a user's top K equals the run's predictions, titles give the same list as IDs, published folders
carry the titles, and unknown users, items and titles are errors naming the closest ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_decode import build_scid_model, crafted_codes
from test_push import build_run, predictions

from align3gr.cli import main
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.evaluate.stage import run_evaluate
from align3gr.hub.item_titles import ItemTitles
from align3gr.hub.recommender import load_recommender
from align3gr.io import write_json
from align3gr.scid.code_tables import load_code_tables
from align3gr.sft.tasks import evaluation_prompts, trained_prompting


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 40-user run whose sft/ is also laid out as dpo/rf_hard/ (the README's default stage) with the same test
    evaluation."""
    data = tmp_path_factory.mktemp("recommend_data") / "data"
    build_dataset("movielens", "recbole", data, DataConfig(max_users=40))
    run = build_run(data, tmp_path_factory.mktemp("recommend") / "run", build_scid_model)
    shutil.copytree(run / "sft", run / "dpo" / "rf_hard")
    shutil.copytree(run / "eval" / "test" / "sft", run / "eval" / "test" / "rf_hard")
    return run


def recommend(capsys, *argv: str) -> list[dict]:
    """The JSON list `align3gr recommend ... --json` prints."""
    assert main(["recommend", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def error_of(capsys, *argv: str) -> str:
    assert main(["recommend", *argv]) == 2
    return capsys.readouterr().err


@pytest.mark.slow
def test_user_top_k_is_the_runs_prediction(run, capsys):
    """The acceptance: for known users, the command prints the run's ranked list cut to K, with its scores and the
    dataset's titles; the table says what the score is."""
    model = str(run / "dpo" / "rf_hard")
    titles = {item_id: item.title for item_id, item in load_dataset(run / "data").items.items()}
    rows = predictions(run, "rf_hard")
    for row in rows[:3]:
        printed = recommend(capsys, "--model", model, "--user", row["user_id"])
        assert [r["item_id"] for r in printed] == row["ranked"][:10]
        assert [r["score"] for r in printed] == pytest.approx(row["scores"][:10], abs=1e-4)
        assert [r["rank"] for r in printed] == list(range(1, 11))
        assert [r["title"] for r in printed] == [titles[i] for i in row["ranked"][:10]]
    row = rows[-1]
    printed = recommend(capsys, "--model", model, "--user", row["user_id"], "-k", "20")
    assert [r["item_id"] for r in printed] == row["ranked"]
    assert main(["recommend", "--model", model, "--user", row["user_id"], "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1] == f"Top 3 for user {row['user_id']} from {model} (stage rf_hard)"
    assert table[2].startswith("score: log-probability of the item's SCID") and "width 20" in table[2]
    assert table[3].split() == ["rank", "item_id", "title", "score"]
    assert table[5].split()[:2] == ["1", row["ranked"][0]] and titles[row["ranked"][0]] in table[5]
    assert len(table) == 9 and table[8].startswith("3 of ") and "excluded from the ranking" in table[8]
    assert str(run / "data") in table[8]


@pytest.mark.slow
def test_beam_size_and_history_inclusion_match_such_an_evaluation(run, capsys, tmp_path):
    """`--no-exclude-seen --beam-size 30` prints what an evaluation with `exclude_history: false`, beam 30 ranked."""
    config = EvaluateConfig(exclude_history=False, beam_size=30)
    evaluated = run_evaluate(run / "sft", run / "data", tmp_path / "eval", config).predictions
    dataset = load_dataset(run / "data")
    assert any(set(p.ranked) & set(dataset.seen_before(p.user_id, "test")) for p in evaluated)  # history ranked
    for prediction in evaluated[:3]:
        argv = ["--model", str(run / "sft"), "--user", prediction.user_id, "--no-exclude-seen", "--beam-size", "30"]
        assert [r["item_id"] for r in recommend(capsys, *argv, "-k", "30")] == prediction.ranked


@pytest.mark.slow
def test_history_by_titles_equals_history_by_ids(run, capsys):
    dataset = load_dataset(run / "data")
    count: dict[str, int] = {}
    for item in dataset.items.values():
        count[item.title] = count.get(item.title, 0) + 1
    user = next(iter(dataset.sequences))
    history = [i for i in dataset.seen_before(user, "test") if count[dataset.items[i].title] == 1][-8:]
    model = ["--model", str(run / "dpo" / "rf_hard")]
    by_ids = recommend(capsys, *model, "--history", ",".join(history[:4]), *history[4:])
    titles = [dataset.items[i].title for i in history]
    by_titles = recommend(capsys, *model, "--history-titles", *titles[:4], *(t.upper() for t in titles[4:]))
    assert by_titles == by_ids and len(by_ids) == 10
    assert not set(history) & {r["item_id"] for r in by_ids}


@pytest.mark.slow
def test_unknown_users_items_and_titles_name_the_closest(run, capsys):
    model = ["--model", str(run / "dpo" / "rf_hard")]
    dataset = load_dataset(run / "data")
    user = next(iter(dataset.sequences))
    err = error_of(capsys, *model, "--user", user + "0")
    assert f"--user '{user}0': no such user in {run / 'data'}; closest: " in err and repr(user) in err
    item = next(iter(dataset.items))
    err = error_of(capsys, *model, "--history", item, item + "x")
    assert f"--history: item '{item}x' is not in " in err and f"closest: {item!r}" in err
    title = next(iter(dataset.items.values())).title
    err = error_of(capsys, *model, "--history-titles", title[:-1] + "z")
    assert f"--history-titles: no item is titled {title[:-1] + 'z'!r}" in err and f"closest: {title!r}" in err


def test_a_title_of_several_items_lists_them():
    names = {"218": "Cape Fear", "673": "Cape Fear", "1": "Toy Story"}
    titles = ItemTitles(names, "items.jsonl", {"673": "Cape Fear (1962)"})
    assert titles.item_ids(["toy story ", "Toy Story"]) == ["1", "1"]
    with pytest.raises(ConfigError, match=r"'cape fear' is the title of 2 items: 218 \(Cape Fear\); 673 \(Cape Fear "
                       r"\(1962\)\); give the one meant by its ID with --history"):  # fmt: skip
        titles.item_ids(["Toy Story", "cape fear"])


@pytest.mark.slow
def test_published_folder_carries_the_titles(run, capsys, tmp_path):
    """A published folder recommends by title without the dataset; `--user` needs `--data`; a folder published
    without titles prints item IDs and says so."""
    folder = tmp_path / "published"
    assert main(["push", "--run", str(run), "--stage", "rf_hard", "--to-folder", str(folder), "--with-titles"]) == 0
    capsys.readouterr()
    dataset = load_dataset(run / "data")
    row = predictions(run, "rf_hard")[0]
    history = dataset.seen_before(row["user_id"], "test")[-3:]
    titles = [dataset.items[i].title for i in history]
    by_titles = recommend(capsys, "--model", str(folder), "--history-titles", *titles)
    assert by_titles == recommend(capsys, "--model", str(run / "dpo" / "rf_hard"), "--history", *history)
    assert "--user needs the dataset" in error_of(capsys, "--model", str(folder), "--user", row["user_id"])
    by_user = recommend(capsys, "--model", str(folder), "--user", row["user_id"], "--data", str(run / "data"))
    assert [r["item_id"] for r in by_user] == row["ranked"][:10]

    (folder / "item_titles.json").unlink()
    assert "has no item_titles.json; give --data" in error_of(capsys, "--model", str(folder), "--history-titles", "x")
    assert main(["recommend", "--model", str(folder), "--history", *history, "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rank, item_id, score = lines[-2].split()  # no title column text
    assert (rank, item_id, float(score)) == ("2", by_titles[1]["item_id"], pytest.approx(by_titles[1]["score"], 1e-3))
    assert "titles: none (" in lines[-1] and "no --data was given" in lines[-1]


@pytest.mark.slow
def test_a_model_outside_a_run_prompts_with_the_datas_max_history(run, capsys, tmp_path):
    """A stage folder copied out of its run (no align3gr.json, no run data/) given `--data` whose `max_history` is 5
    builds the prompts, and prints the ranking, of `align3gr evaluate --model X --data D`."""
    model = shutil.copytree(run / "sft", tmp_path / "model")
    data = tmp_path / "data5"
    build_dataset("movielens", "recbole", data, DataConfig(max_users=40, max_history=5))
    dataset = load_dataset(data)
    evaluated = run_evaluate(model, data, tmp_path / "eval").predictions
    for prediction in evaluated[:3]:
        printed = recommend(capsys, "--model", str(model), "--data", str(data), "--user", prediction.user_id)
        assert [r["item_id"] for r in printed] == prediction.ranked[:10]
        assert [r["score"] for r in printed] == pytest.approx(prediction.scores[:10], abs=1e-4)
    recommender = load_recommender(model, data=data)
    assert recommender.settings.max_history == dataset.max_history == 5
    item_codes, user_codes = load_code_tables(model)
    with_user_scid, seq_format = trained_prompting(model)
    pairs = evaluation_prompts(
        dataset, item_codes, user_codes, "test", recommender.tokenizer,
        with_user_scid=with_user_scid, seq_format=seq_format,
    )  # fmt: skip
    assert sum(len(dataset.seen_before(ex.user_id, "test")) > 5 for ex, _ in pairs) > 30  # histories are cut
    assert all(recommender.prompt(dataset.seen_before(ex.user_id, "test"), ex.user_id) == ids for ex, ids in pairs)


@pytest.fixture
def code_tables_only(tmp_path) -> Path:
    """A folder holding only code tables (5 items): whatever needs the model fails, what does not is checked."""
    folder = tmp_path / "tables"
    folder.mkdir()
    write_json(folder / "item_codes.json", crafted_codes(["1", "2", "3", "4", "5"], ""))
    write_json(folder / "user_codes.json", {})
    return folder


def test_revision_of_a_local_folder_is_refused(code_tables_only, capsys):
    """`--revision` applies to Hub repo ids: with a local folder it is an error, not silently ignored."""
    err = error_of(capsys, "--model", str(code_tables_only), "--history", "1", "--revision", "v1")
    assert f"--revision 'v1': applies to Hub repo ids only, and {code_tables_only} is a local folder" in err
    with pytest.raises(ConfigError, match="--revision 'v1': applies to Hub repo ids only"):
        load_recommender(code_tables_only, revision="v1")


def test_k_above_the_catalogue_stops_before_the_model_loads(code_tables_only, capsys):
    """`-k` above the code table's item count is refused before any weights are read (the folder has none)."""
    err = error_of(capsys, "--model", str(code_tables_only), "--history", "1", "-k", "6")
    assert "k must be between 1 and the catalogue's 5 items, got 6" in err
    assert main(["recommend", "--model", str(code_tables_only), "--history", "1", "-k", "5"]) != 0  # no weights
