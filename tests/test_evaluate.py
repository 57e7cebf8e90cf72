"""The `evaluate` stage end to end on ML-100K users with a tiny Qwen2 model: files, metrics, errors, sharding."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from launching import accelerate_launch
from test_decode import build_scid_model

from align3gr.cli import main
from align3gr.data.dataset import load_dataset
from align3gr.decode.sharded import missing_batches, shard_order
from align3gr.errors import ConfigError, DataError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.evaluate.stage import run_evaluate
from align3gr.io import read_json, write_json
from align3gr.metrics import Prediction, compute_metrics

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "ranking_seconds", "users_per_second", "processes")


@pytest.fixture(scope="module")
def scid_model(ml100k_small, tmp_path_factory):
    return build_scid_model(ml100k_small, tmp_path_factory.mktemp("eval_model") / "sft")


@pytest.fixture(scope="module")
def single_run(scid_model, ml100k_small, tmp_path_factory):
    """`align3gr evaluate` on the valid split, one process, with one user's text examples."""
    out = tmp_path_factory.mktemp("eval") / "sft"
    argv = ["evaluate", "--model", str(scid_model), "--data", str(ml100k_small), "--out", str(out)]
    assert main([*argv, "--split", "valid", "--ks", "5,10,20", "--text-examples", "1"]) == 0
    return out


def test_metrics_and_predictions_files(single_run, ml100k_small, scid_model, capsys):
    metrics = read_json(single_run / "metrics.json")
    rows = [json.loads(line) for line in (single_run / "predictions.jsonl").read_text().splitlines()]
    dataset = load_dataset(ml100k_small)
    examples = dataset.examples("valid")
    assert [r["user_id"] for r in rows] == [e.user_id for e in examples]
    assert [r["target"] for r in rows] == [e.target for e in examples]
    assert all(len(r["ranked"]) == len(set(r["ranked"])) == 20 == len(r["scores"]) for r in rows)
    assert all(set(r["ranked"]) <= set(dataset.items) for r in rows)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)
    assert metrics["num_users"] == len(examples) and metrics["split"] == "valid" and metrics["beam_size"] == 20
    assert metrics["valid_rate"] == 1.0 and metrics["code_tables"] == str(scid_model)
    assert {"seconds", "ranking_seconds", "users_per_second"} <= set(metrics)
    again = compute_metrics(
        [Prediction(r["user_id"], r["target"], r["ranked"], r["scores"], 20, 20) for r in rows], [5, 10, 20], 1
    )
    for key in ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert metrics[key] == pytest.approx(again[key])
    assert metrics["recall@5"] <= metrics["recall@10"] <= metrics["recall@20"]
    texts = [json.loads(line) for line in (single_run / "text_examples.jsonl").read_text().splitlines()]
    assert texts and texts[0]["task"] == "next title (C1-1)" and isinstance(texts[0]["generated"], str)


def test_history_exclusion_drops_exactly_the_whole_history(single_run, scid_model, ml100k_small, tmp_path):
    """By default every item before the target is excluded, beyond the prompt's last 20 too, and the lists stay
    20 items long; `--no-exclude-history` ranks them like any item. metrics.json records the protocol."""
    off = tmp_path / "off"
    argv = ["evaluate", "--model", str(scid_model), "--data", str(ml100k_small), "--out", str(off), "--split", "valid"]
    assert main([*argv, "--no-exclude-history"]) == 0
    assert read_json(single_run / "metrics.json")["exclude_history"] is True
    assert read_json(off / "metrics.json")["exclude_history"] is False
    dataset = load_dataset(ml100k_small)
    prompt_history = {ex.user_id: set(ex.history) for ex in dataset.examples("valid")}
    kept, older = 0, 0
    for on_row, off_row in zip(*(predictions(folder) for folder in (single_run, off)), strict=True):
        seen = set(dataset.seen_before(on_row["user_id"], "valid"))
        assert len(on_row["ranked"]) == 20 and not seen & set(on_row["ranked"])
        kept += len(seen & set(off_row["ranked"]))
        older += len((seen - prompt_history[off_row["user_id"]]) & set(off_row["ranked"]))
    assert kept > older > 0  # without exclusion the model ranks history items, older ones than the prompt's too


def predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def test_shard_order_keeps_batches():
    lengths = [5, 3, 9, 3, 7, 1, 2]
    single = shard_order(lengths, 2, 0, 1)
    shards = [shard_order(lengths, 2, p, 3) for p in range(3)]
    assert sorted(single) == list(range(7)) == sorted(i for s in shards for i in s)
    batches = [single[i : i + 2] for i in range(0, 7, 2)]
    assert shards[0] == batches[0] + batches[3] and shards[1] == batches[1]


@pytest.mark.parametrize(("prompts", "processes"), [(7, 3), (512, 3), (512, 5), (512, 16), (3, 4), (64, 2)])
def test_under_fsdp_every_process_decodes_as_many_batches(prompts, processes):
    """512 prompts in batches of 32 on 3, 5 or 7 processes deal 16 batches unevenly; with the missing batches
    (`missing_batches`) each process runs the busiest one's number of forwards, which FSDP's collectives need."""
    batch = 2 if prompts < 10 else 32
    counts = []
    for process in range(processes):
        real = len(shard_order([1] * prompts, batch, process, processes))
        counts.append(math.ceil(real / batch) + missing_batches(prompts, batch, process, processes))
    assert len(set(counts)) == 1 and counts[0] == math.ceil(math.ceil(prompts / batch) / processes)


def test_code_table_of_another_dataset_is_named(scid_model, ml100k_small, tmp_path):
    scid = tmp_path / "scid"
    scid.mkdir()
    items = read_json(scid_model / "item_codes.json")
    items["not-an-item"] = ["<a_0>", "<b_0>", "<c_99>"]
    write_json(scid / "item_codes.json", items)
    shutil.copy(scid_model / "user_codes.json", scid / "user_codes.json")
    with pytest.raises(DataError, match=r"item_codes.json: 'not-an-item' is not in the dataset"):
        run_evaluate(scid_model, ml100k_small, tmp_path / "out", scid_dir=scid)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_named(scid_model, ml100k_small, tmp_path, capsys):
    argv = ["evaluate", "--model", str(scid_model), "--data", str(ml100k_small), "--out", str(tmp_path / "o")]
    assert main([*argv, "--ks", "5,x"]) == 2
    assert "--ks '5,x'" in capsys.readouterr().err
    assert main([*argv, "--beam-size", "0"]) == 2
    assert "beam_size must be >= 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="split='train'"):
        EvaluateConfig(split="train").validate()
    with pytest.raises(ConfigError, match="is empty"):
        EvaluateConfig(ks=[]).validate()


@pytest.mark.slow
def test_two_processes_match_one(single_run, scid_model, ml100k_small, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo) writes the same ranked lists and metrics as one process;
    scores agree to float precision (1 BLAS thread per process instead of 2 changes the last bits)."""
    out = tmp_path / "sharded"
    command = accelerate_launch(
        "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "evaluate.py"), "--model", str(scid_model), "--data", str(ml100k_small),
        "--out", str(out), "--split", "valid", "--ks", "5,10,20",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Evaluation ") == 1  # printed by the main process only
    sharded_rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line) for line in (single_run / "predictions.jsonl").read_text().splitlines()]
    assert [(r["user_id"], r["target"], r["ranked"]) for r in sharded_rows] == [
        (r["user_id"], r["target"], r["ranked"]) for r in single_rows
    ]
    for a, b in zip(sharded_rows, single_rows, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-5)
    sharded, single = read_json(out / "metrics.json"), read_json(single_run / "metrics.json")
    assert sharded["processes"] == 2
    assert {k: v for k, v in sharded.items() if k not in (*TIMING, "config")} == {
        k: v for k, v in single.items() if k not in (*TIMING, "config")
    }
