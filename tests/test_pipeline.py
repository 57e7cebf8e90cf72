"""`align3gr pipeline`: skipping by content hash, re-running what changed, continuing after a kill, and stages run
alone giving what the pipeline gave. The end-to-end runs use a 100-user slice of MovieLens-100K."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from launching import accelerate_launch
from safetensors.torch import save_file

import align3gr
from align3gr.cli import main
from align3gr.config import config_from_sources
from align3gr.data.dataset import load_dataset
from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.stage import run_dpo
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.io import write_json
from align3gr.models.local import model_identity
from align3gr.pipeline import load_pipeline_config, run_pipeline
from align3gr.pipeline.ablation import (
    ladder,
    ladder_markdown,
    ladder_steps,
    ladder_text,
    plot_ladder,
    rung_tests,
    shown_rows,
    trained_rungs,
)
from align3gr.pipeline.config import write_pipeline_config
from align3gr.pipeline.plan import Plan, Step, data_steps, in_run, lineage_key, pipeline_steps
from align3gr.pipeline.runner import Outcome, run_steps
from align3gr.pipeline.seeds import seed_plans
from align3gr.pipeline.summary import stage_rows, summary_text, write_summary
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft

SMALL = {
    "source": {"builder": "movielens", "source": "recbole"},
    "data": {"max_users": 100},
    "embed": {"cf_epochs": 2, "cf_dim": 16},
    "tokenize": {"codebook_size": 16, "user_codebook_size": 8, "code_dim": 8, "hidden_dims": [32],
                 "phase1_max_epochs": 2, "phase2_epochs": 3},
    "sft": {"model": "tiny", "tiny_vocab_size": 600, "tiny_hidden_size": 32, "tiny_layers": 1,
            "max_examples_per_task": 100, "per_device_train_batch_size": 16, "max_steps": 16, "save_steps": 4,
            "eval_examples": 16, "learning_rate": 3.0e-3},
    "dpo": {"stages": ["sp_easy", "rf_easy"], "num_rejected": 4, "candidates": 8, "per_device_train_batch_size": 8,
            "max_steps": 3, "generation_batch_size": 50},
    "evaluate": {"batch_size": 50},
}  # fmt: skip
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
DPO_FULL = ["sp_easy", "sp_medium", "sp_hard", "rf_easy", "rf_hard"]
BEFORE_SFT_REUSED = {stage: "reused" for stage in ("data", "embed", "tokenize", "popular", "sasrec")}


def write_config(path: Path, changes: dict | None = None) -> Path:
    config = json.loads(json.dumps(SMALL))
    for section, values in (changes or {}).items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def metrics_by_stage(summary: dict) -> dict[str, tuple]:
    return {row["stage"]: tuple(row[m] for m in METRICS) for row in summary["stages"] if "recall@10" in row}


def status_by_stage(summary: dict) -> dict[str, str]:
    return {row["stage"]: row["status"] for row in summary["stages"]}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(config, run folder, summary) of one uninterrupted pipeline run on the slice."""
    folder = tmp_path_factory.mktemp("pipeline")
    config = write_config(folder / "small.yaml")
    summary = run_pipeline(config, folder / "run")
    return config, folder / "run", summary


def test_unknown_section_is_named(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("sft:\n  max_steps: 3\nsfft:\n  learning_rate: 1.0\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown section 'sfft'; the pipeline's sections are source"):
        load_pipeline_config(path)


def writer(folder: Path, text: str, calls: list[str], name: str):
    """A step body that records its call and writes `text` into `folder/out.txt`."""

    def run() -> None:
        calls.append(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out.txt").write_text(text)

    return run


def test_steps_rerun_exactly_what_changed(tmp_path):
    """A chain a -> b -> c: options of b changed re-run b and c; an altered output re-runs its step only; a deleted
    output written again with the same content leaves what follows it alone."""
    calls: list[str] = []

    def step(name: str, inputs: tuple[str, ...], options: dict, text: str) -> Step:
        return Step(name, name, name, tmp_path / name, inputs, options, writer(tmp_path / name, text, calls, name), {})

    def chain(b_option: int) -> list[Step]:
        return [step("a", (), {}, "A"), step("b", ("a",), {"x": b_option}, f"B{b_option}"), step("c", ("b",), {}, "C")]

    def run(b_option: int = 1) -> list[bool]:
        calls.clear()
        return [outcome.reused for outcome in run_steps(chain(b_option), tmp_path)]

    assert run() == [False, False, False] and calls == ["a", "b", "c"]
    assert run() == [True, True, True] and calls == []
    assert run(b_option=2) == [True, False, False] and calls == ["b", "c"]
    (tmp_path / "c" / "out.txt").write_text("edited")
    assert run(b_option=2) == [True, True, False] and calls == ["c"]
    assert (tmp_path / ".c.edited" / "out.txt").read_text() == "edited"  # the edits kept aside, not deleted
    (tmp_path / "c" / "out.txt").write_text("edited again")
    assert run(b_option=2) == [True, True, False] and calls == ["c"]
    assert (tmp_path / ".c.edited-2" / "out.txt").read_text() == "edited again"  # beside the first edits
    assert (tmp_path / ".c.edited" / "out.txt").read_text() == "edited"
    shutil.rmtree(tmp_path / "b")
    assert run(b_option=2) == [True, False, True] and calls == ["b"]
    with pytest.raises(ConfigError, match="step b reads 'z', which no earlier step produces"):
        run_steps([step("b", ("z",), {}, "B")], tmp_path)


def test_a_run_killed_after_a_step_wrote_its_output_keeps_the_edits_it_set_aside(tmp_path):
    """An edited output is set aside and its step runs again; killed after the step wrote its new output (which
    differs from the first: an evaluation's seconds) and before the state recorded it, the next run does not take
    that output for an edited one: the user's edits stay in `.NAME.edited`."""
    calls: list[str] = []
    run_steps([Step("c", "c", "c", tmp_path / "c", (), {}, writer(tmp_path / "c", "C1", calls, "c"), {})], tmp_path)
    (tmp_path / "c" / "out.txt").write_text("user edit")
    write_fresh = writer(tmp_path / "c", "C2", calls, "c")

    def killed() -> None:
        write_fresh()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_steps([Step("c", "c", "c", tmp_path / "c", (), {}, killed, {})], tmp_path)
    (outcome,) = run_steps([Step("c", "c", "c", tmp_path / "c", (), {}, write_fresh, {})], tmp_path)
    assert not outcome.reused and (tmp_path / ".c.edited" / "out.txt").read_text() == "user edit"
    assert run_steps([Step("c", "c", "c", tmp_path / "c", (), {}, write_fresh, {})], tmp_path)[0].reused


def test_an_output_changed_after_the_pipeline_wrote_it_is_built_again(tmp_path):
    """The data stage reads only its meta.json to decide it is up to date: a file deleted from its folder since the
    pipeline recorded it is written again, not taken as current."""
    from test_data_errors import write_small_grouplens

    config = tmp_path / "c.yaml"
    source = write_small_grouplens(tmp_path / "raw")
    config.write_text(yaml.safe_dump({"source": {"builder": "movielens", "source": str(source)}}))
    run = tmp_path / "run"
    data = data_steps(Plan(load_pipeline_config(config), run / "config.yaml", run, in_run(run)))[0]
    run_steps([data], run)
    written = (run / "data" / "users.jsonl").read_bytes()
    assert run_steps([data], run)[0].reused
    (run / "data" / "users.jsonl").unlink()
    (outcome,) = run_steps([data], run)
    assert not outcome.reused and (run / "data" / "users.jsonl").read_bytes() == written


def test_an_output_published_under_new_options_but_not_recorded_is_left_to_its_stage(tmp_path):
    """Options changed, the data step's output is written with them (a run killed after the stage published it and
    before the state recorded it, or the stage command run by hand into the run folder): the state still records the
    old options' output, and the next run does not take the new one as edited; the stage finds it current and keeps
    it, nothing is built again."""
    from test_data_errors import write_small_grouplens

    from align3gr.data.build import build_dataset

    source = write_small_grouplens(tmp_path / "raw")
    run = tmp_path / "run"

    def data_step(user_k: int) -> Step:
        config = tmp_path / f"c{user_k}.yaml"
        config.write_text(yaml.safe_dump({"source": {"builder": "movielens", "source": str(source)},
                                          "data": {"user_k": user_k}}))  # fmt: skip
        return data_steps(Plan(load_pipeline_config(config), run / "config.yaml", run, in_run(run)))[0]

    run_steps([data_step(5)], run)
    recorded = json.loads((run / "pipeline_state.json").read_text())["data"]["key"]
    changed = data_step(4)
    data = load_pipeline_config(tmp_path / "c4.yaml").data
    build_dataset("movielens", source, run / "data", data, overwrite=True)  # the stage, by hand
    written = {path.name: path.stat().st_mtime_ns for path in (run / "data").iterdir()}
    run_steps([changed], run)
    assert {path.name: path.stat().st_mtime_ns for path in (run / "data").iterdir()} == written
    assert json.loads((run / "pipeline_state.json").read_text())["data"]["key"] != recorded
    assert run_steps([changed], run)[0].reused


def test_a_local_model_folders_contents_key_the_steps_loading_it(tmp_path):
    """A base model or encoder named by its folder: replacing the model in that folder re-runs the steps loading it;
    a built-in or Hub model keys as before."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"hidden_size": 64}')
    config = tmp_path / "c.yaml"

    def options(kind: str, **sections: dict) -> dict:
        config.write_text(yaml.safe_dump(sections))
        run = tmp_path / "run"
        plan = Plan(load_pipeline_config(config), run / "config.yaml", run, in_run(run))
        return next(step for step in pipeline_steps(plan) if step.kind == kind).options

    first = options("sft", sft={"model": str(base)})["models"]
    (base / "config.json").write_text('{"hidden_size": 128}')
    assert options("sft", sft={"model": str(base)})["models"] != first
    seen = {json.dumps(options("sft", sft={"model": str(base)})["models"])}
    for age, (weight, tokenizer) in enumerate([(0.0, "a"), (1.0, "a"), (1.0, "b")]):  # fine-tuned in place, same shapes
        save_file({"w": torch.full((4, 4), weight)}, str(base / "model.safetensors"))
        (base / "tokenizer.json").write_text(json.dumps({"vocab": tokenizer}))
        for name in ("model.safetensors", "tokenizer.json"):
            os.utime(base / name, (time.time() - 100 + age, time.time() - 100 + age))
        seen.add(json.dumps(options("sft", sft={"model": str(base)})["models"]))
    assert len(seen) == 4
    (base / "README.md").write_text("notes")
    assert json.dumps(options("sft", sft={"model": str(base)})["models"]) in seen
    assert options("embed", embed={"semantic_model": str(base)})["models"] == {str(base): model_identity(base)}
    assert "models" not in options("sft") and "models" not in options("embed")


def test_summary_shows_the_baselines_and_each_model_over_the_stronger_one(tmp_path):
    """The baselines are steps of every run (after the data steps, from the data and the embeddings) and rows of the
    summary; each evaluated model's Recall@10 and NDCG@10 are divided by the baseline with the higher NDCG@10."""
    config = load_pipeline_config(write_config(tmp_path / "small.yaml"))
    steps = {s.name: s for s in pipeline_steps(Plan(config, tmp_path / "config.yaml", tmp_path, in_run(tmp_path)))}
    assert list(steps)[:6] == ["data", "embeddings", "scid", "eval/test/popular", "eval/test/sasrec", "sft"]
    assert steps["eval/test/popular"].inputs == ("data",) and steps["eval/test/popular"].kind == "baseline"
    assert steps["eval/test/sasrec"].inputs == ("data", "embeddings")

    def outcome(name: str, kind: str, recall: float | None = None, ndcg: float | None = None) -> Outcome:
        step = Step(name, name.rsplit("/", 1)[-1], kind, tmp_path / name, (), {}, lambda: None, {},
                    evaluates="sft" if kind == "evaluate" else None)  # fmt: skip
        metrics = None if recall is None else {"recall@5": recall / 2, "recall@10": recall, "ndcg@5": ndcg / 2,
                                               "ndcg@10": ndcg, "split": "test"}  # fmt: skip
        return Outcome(step, False, 1.0, metrics)

    outcomes = [outcome("data", "data"), outcome("eval/test/popular", "baseline", 0.08, 0.05),
                outcome("eval/test/sasrec", "baseline", 0.12, 0.04), outcome("sft", "sft"),
                outcome("eval/test/sft", "evaluate", 0.06, 0.025)]  # fmt: skip
    summary = write_summary(tmp_path, {}, outcomes, 5.0)
    rows = {row["stage"]: row for row in summary["stages"]}
    assert list(rows) == ["data", "popular", "sasrec", "sft"] and summary["ratio_to"] == "popular"
    assert rows["popular"]["baseline"] and rows["sasrec"]["recall@10"] == 0.12
    assert "recall@10 ratio" not in rows["sasrec"]
    assert rows["sft"]["recall@10 ratio"] == pytest.approx(0.75) and rows["sft"]["ndcg@10 ratio"] == pytest.approx(0.5)
    assert "ratio" not in " ".join(rows["data"])
    for text in (summary_text(summary), (tmp_path / "summary.md").read_text()):
        assert "recall@10 / popular" in text and "ndcg@10 / popular" in text and "sasrec" in text and "0.75" in text

    zero = [outcome("eval/test/popular", "baseline", 0.0, 0.0), outcome("eval/test/sasrec", "baseline", 0.0, 0.0),
            outcome("sft", "sft"), outcome("eval/test/sft", "evaluate", 0.06, 0.025)]  # fmt: skip
    summary = write_summary(tmp_path, {}, zero, 5.0)  # baselines at 0: no ratio, and summary.json stays JSON
    assert json.loads((tmp_path / "summary.json").read_text(), parse_constant=pytest.fail) == summary
    assert summary["stages"][-1]["recall@10 ratio"] is None and "nan" not in summary_text(summary).lower()


@pytest.mark.parametrize(("meta", "status"), [({"guard": {"kept": "start"}}, "ran, start kept"),
                                              ({"handed_on": "no preference rows"}, "ran, no rows: start handed on"),
                                              ({"guard": {"kept": "trained"}}, "ran")])  # fmt: skip
def test_a_dpo_stage_that_hands_on_its_start_model_says_why_in_its_status(tmp_path, meta, status):
    (tmp_path / "dpo" / "sp_hard").mkdir(parents=True)
    write_json(tmp_path / "dpo" / "sp_hard" / "meta.json", meta)
    step = Step("dpo/sp_hard", "sp_hard", "dpo", tmp_path / "dpo" / "sp_hard", (), {}, lambda: None, {})
    assert stage_rows([Outcome(step, False, 1.0, None)])[0]["status"] == status


@pytest.mark.slow
def test_pipeline_runs_reuses_and_reports(finished_run):
    config, run, summary = finished_run
    assert [row["stage"] for row in summary["stages"]] == ["data", "embed", "tokenize", "popular", "sasrec", "sft",
                                                           "sp_easy", "rf_easy"]  # fmt: skip
    assert set(status_by_stage(summary).values()) == {"ran"}
    for stage in ("popular", "sasrec", "sft", "sp_easy", "rf_easy"):
        written = json.loads((run / "eval" / "test" / stage / "metrics.json").read_text())
        assert metrics_by_stage(summary)[stage] == tuple(written[m] for m in METRICS)
        assert written["split"] == "test" and written["num_users"] == 100 and written["exclude_history"] is True
    assert json.loads((run / "summary.json").read_text())["stages"] == summary["stages"]
    assert summary["ratio_to"] in ("popular", "sasrec")
    assert "| sft | ran |" in (run / "summary.md").read_text()
    assert f"recall@10 / {summary['ratio_to']}" in (run / "summary.md").read_text()
    assert load_pipeline_config(run / "config.yaml") == load_pipeline_config(config)
    again = run_pipeline(config, run)
    assert set(status_by_stage(again).values()) == {"reused"}
    assert metrics_by_stage(again) == metrics_by_stage(summary)


@pytest.mark.slow
def test_pushed_final_stage_recommends_what_the_run_predicted(finished_run, tmp_path):
    _, run, _ = finished_run
    folder = tmp_path / "published"
    assert main(["push", "--run", str(run), "--stage", "rf_easy", "--to-folder", str(folder)]) == 0
    recommender = align3gr.load_recommender(folder)
    predictions = [json.loads(line) for line in (run / "eval" / "test" / "rf_easy" / "predictions.jsonl").open()]
    dataset = load_dataset(run / "data")
    for row in predictions[:8]:
        history = dataset.seen_before(row["user_id"], "test")  # the evaluation excluded all of it
        assert recommender.recommend(history, k=10, user_id=row["user_id"]) == row["ranked"][:10]


@pytest.mark.slow
def test_stages_run_alone_give_the_pipeline_result(finished_run, tmp_path):
    """The stage commands read the same sections: SFT and DPO alone find the pipeline's outputs up to date, and
    `align3gr evaluate --config` alone writes the pipeline's metrics and predictions."""
    config, run, _ = finished_run
    sft = run_sft(run / "data", run / "scid", run / "sft", config_from_sources(SFTStageConfig, config))
    assert sft.up_to_date
    dpo = run_dpo(run / "data", run / "sft", run / "dpo", config_from_sources(DPOStageConfig, config), run / "eval",
                  config_from_sources(EvaluateConfig, config))  # fmt: skip
    assert [r.up_to_date for r in dpo] == [True, True]
    out = tmp_path / "eval_sft"
    assert main(["evaluate", "--config", str(config), "--model", str(run / "sft"), "--data", str(run / "data"),
                 "--out", str(out)]) == 0  # fmt: skip
    inside = run / "eval" / "test" / "sft"
    assert (out / "predictions.jsonl").read_text() == (inside / "predictions.jsonl").read_text()
    timing = ("seconds", "ranking_seconds", "users_per_second")
    alone, piped = (json.loads((folder / "metrics.json").read_text()) for folder in (out, inside))
    assert {k: v for k, v in alone.items() if k not in timing} == {k: v for k, v in piped.items() if k not in timing}


@pytest.mark.slow
def test_killed_run_continues_to_the_same_metrics_and_an_sft_change_reruns_from_sft(finished_run, tmp_path):
    config, reference_run, reference = finished_run
    run = tmp_path / "run"
    command = [sys.executable, "-m", "align3gr.cli", "pipeline", "--config", str(config), "--run-dir", str(run)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list((run / "sft.work").glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, "the pipeline ended before SFT wrote a checkpoint"
        assert time.monotonic() < deadline, "no SFT checkpoint after 10 minutes"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "sft").exists()
    resumed = run_pipeline(config, run)
    assert status_by_stage(resumed) == {**BEFORE_SFT_REUSED, "sft": "ran", "sp_easy": "ran", "rf_easy": "ran"}
    assert metrics_by_stage(resumed) == metrics_by_stage(reference)
    for stage in ("sft", "sp_easy", "rf_easy"):
        expected = (reference_run / "eval" / "test" / stage / "predictions.jsonl").read_text()
        assert (run / "eval" / "test" / stage / "predictions.jsonl").read_text() == expected

    changed = write_config(tmp_path / "changed.yaml", {"sft": {"learning_rate": 1.0e-3}})
    rerun = run_pipeline(changed, run)
    assert status_by_stage(rerun) == {**BEFORE_SFT_REUSED, "sft": "ran", "sp_easy": "ran", "rf_easy": "ran"}
    assert json.loads((run / "sft" / "meta.json").read_text())["config"]["learning_rate"] == 1.0e-3


def test_ladder_rungs_add_one_module_each(tmp_path):
    """Figure 4's ten rungs from the config: tokenizer, tasks, user SCIDs and DPO stages change where they should,
    the last rung is the config itself, and the steps shared with the main run are placed in its folders."""
    config = load_pipeline_config(write_config(tmp_path / "small.yaml", {"dpo": {"stages": DPO_FULL}}))
    rungs = ladder(config)
    assert [r.label for r in rungs] == ["Single+SEQ", "+CF", "+U-I alignment", "+C1-C3", "+B1", "+User-SCID", "+B2",
                                        "+Softmax-DPO", "+SP-DPO", "+RF-DPO"]  # fmt: skip
    tokenizers = [(r.config.tokenize.dual, r.config.tokenize.use_cf, r.config.tokenize.u2i) for r in rungs]
    assert tokenizers[:3] == [(False, False, False), (False, True, False), (True, True, True)]
    assert len(set(tokenizers[2:])) == 1
    tasks = [r.config.sft.tasks for r in rungs]
    assert tasks[0] == tasks[1] == tasks[2] == ["seq"]
    assert tasks[3] == ["seq", "asym_title", "asym_item", "intention", "preference"]
    assert tasks[4] == tasks[5] == ["seq", "item_align", "asym_title", "asym_item", "intention", "preference"]
    assert tasks[6] == config.sft.tasks and "user_align" in tasks[6]
    assert [r.config.sft.with_user_scid for r in rungs[:7]] == [False] * 5 + [True] * 2
    assert [r.config.dpo.stages for r in rungs[7:] if r.dpo] == [["sp_random"], DPO_FULL[:3], DPO_FULL]
    assert rungs[-1].config == config and not any(r.dpo for r in rungs[:7])

    run = tmp_path / "run"
    steps, results = ladder_steps(config, run)
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    assert all(all(names.index(i) < names.index(s.name) for i in s.inputs) for s in steps)
    main_names = {s.name for s in pipeline_steps(Plan(config, run / "config.yaml", run, in_run(run)))}
    assert main_names <= set(names)
    outside = sorted({s.kind for s in steps if s.name not in main_names})
    assert outside == ["dpo", "evaluate", "sft", "tokenize"]
    assert len([s for s in steps if s.kind == "tokenize"]) == 3 and len([s for s in steps if s.kind == "sft"]) == 7
    final = {rung.label: name for _, rung, name in results}
    assert final["+B2"] == "eval/test/sft" and final["+RF-DPO"] == "eval/test/rf_hard"
    assert final["+Softmax-DPO"].endswith("eval/test/sp_random") and final["Single+SEQ"].startswith("ablation/")

    seeded_steps, seeded = ladder_steps(config, run, [0, 2])
    assert [(seed, name) for seed, _, name in seeded[:10]] == [(0, name) for _, _, name in results]
    two = {rung.label: name for seed, rung, name in seeded if seed == 2}
    seed_two = {s.name for s in pipeline_steps(seed_plans(config, run, [2])[0])}
    assert two["+B2"] == "seeds/2/eval/test/sft" and two["+RF-DPO"] == "seeds/2/eval/test/rf_hard"
    assert {two["+B2"], two["+RF-DPO"], two["+SP-DPO"]} <= seed_two
    assert two["Single+SEQ"].startswith("ablation/") and two["Single+SEQ"] != final["Single+SEQ"]
    assert {s.name for s in steps} <= {s.name for s in seeded_steps} and len(seeded_steps) == 2 * len(steps) - 2
    of_two = [s for s in seeded_steps if s.name not in {x.name for x in steps}]
    assert all(s.name.startswith(("seeds/2/", "ablation/")) for s in of_two)
    single = next(s for s in of_two if s.kind == "tokenize" and not s.lineage["tokenize"]["use_cf"])
    assert "seeds/2/embeddings" in single.inputs


def test_the_ladder_omits_rungs_that_add_nothing_of_the_config(tmp_path):
    """A rung that trains what the rung before it trains is omitted (+B2 without user_align, +RF-DPO when the DPO
    stages are all self-play, +U-I alignment with an item-only tokenizer), and so is the last rung when its DPO
    stages cannot run; the full ladder of the full config omits nothing."""
    full = load_pipeline_config(write_config(tmp_path / "full.yaml", {"dpo": {"stages": DPO_FULL}}))
    assert trained_rungs(full) == (ladder(full), [])
    tasks = [t for t in full.sft.tasks if t != "user_align"]
    lean = full.replace("sft", tasks=tasks).replace("dpo", stages=DPO_FULL[:3])
    kept, left_out = trained_rungs(lean)
    assert left_out == ["+B2", "+RF-DPO"]
    assert [r.label for r in kept] == ["Single+SEQ", "+CF", "+U-I alignment", "+C1-C3", "+B1", "+User-SCID",
                                       "+Softmax-DPO", "+SP-DPO"]  # fmt: skip
    assert kept[-1].config == lean and kept[-1].dpo
    item_only = full.replace("tokenize", dual=False, u2i=False)
    assert trained_rungs(item_only)[1] == ["+U-I alignment"]
    kept, left_out = trained_rungs(full.replace("dpo", stages=DPO_FULL[3:]), dpo=False)
    assert left_out == ["+RF-DPO"] and kept[-1].label == "+SP-DPO"
    steps, results = ladder_steps(full.replace("dpo", stages=DPO_FULL[3:]), tmp_path / "run", dpo=False)
    assert not any(s.kind == "dpo" and s.name.endswith(("rf_easy", "rf_hard")) for s in steps)
    assert [rung.label for _, rung, _ in results] == [r.label for r in kept]


def test_the_ladder_keeps_the_configs_user_scid_choice_and_its_item_only_rungs_stay_valid(tmp_path):
    """+User-SCID follows `sft.with_user_scid`: off, the rung adds nothing and is left out (and +B2 too when the tasks
    lack user_align); an item-only rung turns off every option that needs the collaborative side (DAS-CF as well)."""
    full = load_pipeline_config(write_config(tmp_path / "full.yaml", {"dpo": {"stages": DPO_FULL}}))
    no_user = full.replace("sft", with_user_scid=False)
    assert trained_rungs(no_user)[1] == ["+User-SCID"]
    assert not any(rung.config.sft.with_user_scid for rung in ladder(no_user))
    lean = no_user.replace("sft", tasks=[t for t in full.sft.tasks if t != "user_align"])
    assert trained_rungs(lean)[1] == ["+User-SCID", "+B2"]
    das_cf = full.replace("tokenize", use_cf=False, das=True, das_cf=True)
    das_cf.tokenize.validate()
    for rung in ladder(das_cf)[:2]:
        rung.config.tokenize.validate()
        assert not (rung.config.tokenize.das or rung.config.tokenize.das_cf)


def test_ablate_refuses_a_run_folder_made_with_another_config_before_any_work(tmp_path, capsys):
    """The ladder's last rungs are the main run's folders: ablating another config there would retrain over the run's
    models, so the run's recorded config must be the one ablated; the error names what differs."""
    config = write_config(tmp_path / "small.yaml", {})
    run = tmp_path / "run"
    run.mkdir()
    write_pipeline_config(load_pipeline_config(write_config(tmp_path / "other.yaml", {"sft": {"learning_rate": 1e-3}})),
                          run / "config.yaml")  # fmt: skip
    assert main(["ablate", "--config", str(config), "--run-dir", str(run)]) == 2
    error = capsys.readouterr().err
    assert (
        f"{run / 'config.yaml'}: this run was made with another config than {config} (sft.learning_rate differ)"
        in error
    )
    assert sorted(path.name for path in run.iterdir()) == ["config.yaml"]


def test_an_ablation_in_a_new_folder_records_its_config_so_another_is_refused_there(tmp_path, monkeypatch, capsys):
    """The ladder's last rungs are the config's own folders: an ablation killed while it trains its rungs has
    recorded its config, and ablating another config into the same folder is refused."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("align3gr.pipeline.ablation.run_steps", killed)
    config, run = write_config(tmp_path / "small.yaml", {}), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        main(["ablate", "--config", str(config), "--run-dir", str(run)])
    assert load_pipeline_config(run / "config.yaml") == load_pipeline_config(config)
    other = write_config(tmp_path / "other.yaml", {"sft": {"learning_rate": 1e-3}})
    assert main(["ablate", "--config", str(other), "--run-dir", str(run)]) == 2
    assert "this run was made with another config than" in capsys.readouterr().err


def test_ablate_refuses_a_config_without_the_sequential_task_before_any_work(tmp_path, capsys):
    """The first rung trains on `seq` alone: a config whose sft.tasks lack it cannot be ablated, and says so."""
    config = write_config(tmp_path / "no_seq.yaml", {"sft": {"tasks": ["item_align", "asym_title"]}})
    run = tmp_path / "run"
    assert main(["ablate", "--config", str(config), "--run-dir", str(run)]) == 2
    error = capsys.readouterr().err
    assert (
        "no_seq.yaml: sft.tasks=['item_align', 'asym_title'] lacks seq; the ablation ladder starts from Single+SEQ"
        in error
    )
    assert not run.exists()


def test_a_one_seed_ladder_md_shows_the_printed_tables_columns(tmp_path):
    """ladder.md of one seed has the columns of the printed table (the p columns its note explains among them), and
    each rung's evaluated model."""
    rows = [{"step": 1, "rung": "Single+SEQ", **dict.fromkeys(METRICS, 0.1), "split": "test", "model": "a/sft"},
            {"step": 2, "rung": "+CF", **dict.fromkeys(METRICS, 0.2), "split": "test", "model": "b/sft",
             "p": dict.fromkeys(METRICS, 0.0123)}]  # fmt: skip
    summary = {"run_dir": str(tmp_path), "seeds": [0], "rows": rows, "skipped": [], "left_out": []}
    text = ladder_markdown(summary)
    header = next(line for line in text.splitlines() if line.startswith("| step"))
    assert header == "| " + " | ".join([*shown_rows(summary)[0], "model"]) + " |"
    assert "| p recall@10 | p ndcg@10 | model |" in header and "| 0.0123 | 0.0123 | b/sft |" in text
    assert "p recall@10" in ladder_text(summary) and "\n- p: two-sided paired t-test" in text
    plot_ladder(rows, [0], tmp_path / "ladder.png")  # written through a temporary file and a rename
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [path.name for path in tmp_path.iterdir()] == ["ladder.png"]


def test_each_rung_is_tested_against_the_rung_before_over_users_averaged_over_seeds(tmp_path):
    """Two seeds, three rungs, four users whose target sits at a known rank: the p-values are scipy's paired t-test
    of the hand-computed per-user means (a hit at rank r scores recall 1 and NDCG 1/log2(r + 1) within the cut-off)."""
    from scipy import stats

    ranks = {  # (seed, rung) -> the target's 1-based rank per user (None: not in the list)
        (0, 0): [1, None, 3, None], (0, 1): [1, 2, 2, 8], (0, 2): [1, 2, 2, 8],
        (1, 0): [None, None, 5, 12], (1, 1): [2, 1, 1, 4], (1, 2): [2, 1, 1, 5],
    }  # fmt: skip
    paths = []
    for seed in (0, 1):
        for rung in range(3):
            path = tmp_path / f"{seed}_{rung}.jsonl"
            rows = []
            for user, rank in enumerate(ranks[seed, rung]):
                ranked = [f"x{k}" for k in range(20)]
                if rank is not None:
                    ranked[rank - 1] = "t"
                rows.append(json.dumps({"user_id": str(user), "target": "t", "ranked": ranked}))
            path.write_text("\n".join(rows) + "\n")
            paths.append(path)

    def score(rank: int | None, metric: str) -> float:
        name, k = metric.split("@")
        if rank is None or rank > int(k):
            return 0.0
        return 1.0 if name == "recall" else 1 / math.log2(rank + 1)

    def means(rung: int, metric: str) -> list[float]:
        return [(score(a, metric) + score(b, metric)) / 2 for a, b in zip(ranks[0, rung], ranks[1, rung], strict=True)]

    tests = rung_tests(paths, 3)
    assert tests[0] == {}
    for rung, metric in ((1, "recall@5"), (1, "ndcg@10"), (2, "ndcg@10")):
        expected = stats.ttest_rel(means(rung, metric), means(rung - 1, metric)).pvalue
        assert tests[rung][metric] == pytest.approx(expected, rel=1e-12)
    assert tests[2]["recall@5"] == 1.0  # no user's mean differs: the test is not defined, p is 1
    for path in (paths[2], paths[5]):  # rung 2 of both seeds lists its users in reverse
        path.write_text("\n".join(path.read_text().splitlines()[::-1]) + "\n")
    with pytest.raises(ConfigError, match=r"0_2.jsonl: other users or targets than .*0_0.jsonl; rungs pair by user"):
        rung_tests(paths, 3)


@pytest.mark.slow
def test_ablate_writes_the_ladder_and_reuses_the_main_run(finished_run):
    config, run, summary = finished_run
    before = (run / "sft" / "meta.json").stat().st_mtime_ns
    assert main(["ablate", "--config", str(config), "--run-dir", str(run)]) == 0
    ladder_json = json.loads((run / "ablation" / "ladder.json").read_text())
    rows = ladder_json["rows"]
    assert [row["step"] for row in rows] == list(range(1, 11)) and "seed" not in rows[0]
    assert "p" not in rows[0] and all(0 <= row["p"][m] <= 1 for row in rows[1:] for m in METRICS)
    assert (run / "sft" / "meta.json").stat().st_mtime_ns == before
    full = metrics_by_stage(summary)
    assert tuple(rows[6][m] for m in METRICS) == full["sft"]
    assert tuple(rows[9][m] for m in METRICS) == full["rf_easy"]
    assert (run / "ablation" / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | Single+SEQ |" in (run / "ablation" / "ladder.md").read_text()


@pytest.mark.slow
def test_launcher_runs_changed_stages_on_two_processes(finished_run, tmp_path, monkeypatch):
    """With `--launcher`, the stages to re-run go through `accelerate launch` on 2 CPU processes: a DPO option
    re-runs both DPO stages, an evaluation option re-runs every evaluation (the baselines' too, in-process); SFT's
    sharded evaluation ranks exactly as the in-process one did."""
    config, reference_run, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    changed = write_config(tmp_path / "changed.yaml", {"dpo": {"beta": 0.2}, "evaluate": {"batch_size": 7}})
    launcher = " ".join(accelerate_launch("--multi_gpu", "--num_machines", "1", "--mixed_precision", "no",
                                          "--dynamo_backend", "no"))  # fmt: skip
    summary = run_pipeline(changed, run, launcher=launcher)
    rerun = {"popular": "ran", "sasrec": "ran", "sft": "reused, evaluated again", "sp_easy": "ran", "rf_easy": "ran"}
    assert status_by_stage(summary) == {**BEFORE_SFT_REUSED, **rerun}
    assert not any(row["eval reused"] for row in summary["stages"] if "eval reused" in row)
    for stage in ("sp_easy", "rf_easy"):
        assert json.loads((run / "dpo" / stage / "meta.json").read_text())["config"]["dpo"]["beta"] == 0.2
    sharded = json.loads((run / "eval" / "test" / "sft" / "metrics.json").read_text())
    assert sharded["processes"] == 2 and sharded["config"]["batch_size"] == 7

    def ranked(folder: Path) -> list:
        rows = (json.loads(line) for line in (folder / "eval" / "test" / "sft" / "predictions.jsonl").open())
        return [(row["user_id"], row["ranked"]) for row in rows]

    assert ranked(run) == ranked(reference_run)


def test_lineage_folders_are_named_by_the_options_that_differ_from_their_defaults():
    """A release that adds an option at a default keeping the old behaviour keeps the folder names of earlier runs
    (ablation rungs, seeds); an option set away from its default names another folder."""
    sections = load_pipeline_config(Path(__file__).resolve().parent.parent / "recipes/configs/ml100k.yaml").as_dict()
    lineage = {"data": sections["data"], "tokenize": sections["tokenize"], "dpo_stages": ["sp_easy"]}
    older = {**lineage, "tokenize": {k: v for k, v in sections["tokenize"].items() if k != "revive_dead_codes"}}
    assert lineage_key(older) == lineage_key(lineage)
    assert lineage_key({**lineage, "tokenize": {**sections["tokenize"], "use_cf": False}}) != lineage_key(lineage)
    assert lineage_key({**lineage, "dpo_stages": ["sp_easy", "sp_medium"]}) != lineage_key(lineage)


def test_an_edited_prompt_template_makes_the_steps_that_read_it_out_of_date(tmp_path, monkeypatch):
    """SFT, its evaluations and the DPO stages build their prompts from `sft_tasks.yaml`: an edited copy (through
    ALIGN3GR_PROMPTS) changes their step options, so the runner calls them again; the steps before them keep theirs,
    and the folders (lineages) stay where they were."""
    config = load_pipeline_config(write_config(tmp_path / "small.yaml"))

    def steps() -> dict[str, Step]:
        return {s.name: s for s in pipeline_steps(Plan(config, tmp_path / "config.yaml", tmp_path, in_run(tmp_path)))}

    before = steps()
    edited = tmp_path / "prompts"
    shutil.copytree(Path(__file__).resolve().parent.parent / "prompts", edited)
    with open(edited / "sft_tasks.yaml", "a") as handle:
        handle.write("# edited\n")
    monkeypatch.setenv("ALIGN3GR_PROMPTS", str(edited))
    after = steps()
    changed = {name for name in before if before[name].options != after[name].options}
    assert changed == {"sft", "eval/test/sft", "dpo/sp_easy", "dpo/rf_easy", "eval/test/sp_easy", "eval/test/rf_easy"}
    assert all(before[name].lineage == after[name].lineage and before[name].path == after[name].path for name in before)
