"""Repeated runs (`align3gr pipeline --seeds`) and the paired test between two configs (`align3gr compare`): which
seeds a run seed shifts, the mean and sample std per stage, and the t-test and Wilcoxon p-values against closed forms
on crafted numbers. The end-to-end run uses the 100-user MovieLens-100K slice of tests/test_pipeline.py."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from test_pipeline import SMALL as PIPELINE_SMALL

from align3gr.cli import main
from align3gr.errors import ConfigError
from align3gr.io import atomic_write_json
from align3gr.metrics import Prediction, compute_metrics, user_score, write_evaluation
from align3gr.pipeline import load_pipeline_config, run_pipeline
from align3gr.pipeline.compare import (
    TESTS,
    PairedTest,
    Side,
    compare,
    default_output,
    paired_test,
    write_comparison,
)
from align3gr.pipeline.plan import Plan, Step, in_run, merged_steps, pipeline_steps
from align3gr.pipeline.runner import Outcome
from align3gr.pipeline.seeds import SEEDED, parse_seeds, seed_plans, seeded_config, seeds_summary
from align3gr.pipeline.seeds_report import FILE

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
SMALL = {**PIPELINE_SMALL, "sft": {**PIPELINE_SMALL["sft"], "tasks": ["seq", "item_align"]},
         "dpo": {**PIPELINE_SMALL["dpo"], "stages": ["sp_easy"]}}  # fmt: skip
"""The pipeline slice with two SFT tasks and one DPO stage: a ladder of seven rungs, three of them the pipeline's."""


def small_config(folder: Path) -> Path:
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL), encoding="utf-8")
    return path


def t_p_value(t: float, df: int) -> float:
    """Two-sided p of Student's t from its closed-form CDF for 1 and 3 degrees of freedom."""
    if df == 1:
        return 1 - 2 / math.pi * math.atan(abs(t))
    assert df == 3
    x = abs(t) / math.sqrt(3)
    return 1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x))


def test_parse_seeds_needs_two_distinct_non_negative_seeds(capsys):
    assert parse_seeds("0,1,2,3,4") == [0, 1, 2, 3, 4] and parse_seeds(" 3, 7 ") == [3, 7]
    for bad in ("0", "0,0", "-1,2", "0,x", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    for command in ("pipeline", "ablate"):  # an empty --seeds is an error, not a plain run
        assert main([command, "--config", "c.yaml", "--run-dir", "r", "--seeds", ""]) != 0
        assert "--seeds '': expected" in capsys.readouterr().err


def test_a_run_seed_shifts_every_training_seed_and_keeps_the_dataset(tmp_path):
    """Seed S adds S to the embed, tokenize, sft and dpo seeds and leaves data's; seed 0 is the main run, step for
    step; another seed shares only the data and the popularity baseline with it and puts the rest in seeds/S/."""
    config = load_pipeline_config(small_config(tmp_path))
    assert SEEDED == ("embed", "tokenize", "sft", "dpo")
    assert seeded_config(config, 0) == config
    shifted = seeded_config(config.replace("sft", seed=10), 3)
    assert [getattr(shifted, s).seed for s in SEEDED] == [3, 3, 13, 3] and shifted.data.seed == config.data.seed

    run = tmp_path / "run"
    main_steps = pipeline_steps(Plan(config, run / "config.yaml", run, in_run(run)))
    plans = seed_plans(config, run, [0, 2])
    steps, (zero, two) = merged_steps([(plan, True) for plan in plans])
    assert [(s.name, s.lineage) for s in zero] == [(s.name, s.lineage) for s in main_steps]
    assert plans[0].config_file == run / "config.yaml" and plans[1].config_file == run / "seeds/2/config.yaml"
    shared = [s.name for s in two if not s.name.startswith("seeds/2/")]
    assert shared == ["data", "eval/test/popular"]
    assert [s.name for s in two] == [s.name if s.name in shared else f"seeds/2/{s.name}" for s in main_steps]
    assert len(steps) == 2 * len(main_steps) - 2
    assert all(all(i in {s.name for s in steps[:k]} for i in s.inputs) for k, s in enumerate(steps))


def test_paired_tests_match_closed_forms():
    """Paired t: t = mean(d) / (sd(d) / sqrt(n)), p from the t CDF with n - 1 = 3 degrees of freedom; Wilcoxon:
    the exact null distribution of 5 untied ranks, and the tie-corrected normal approximation."""
    a, b = [0.3, 0.5, 0.4, 0.6], [0.1, 0.4, 0.4, 0.3]  # d = 0.2, 0.1, 0, 0.3: mean 0.15, sd sqrt(0.05 / 3)
    t = 0.15 / (math.sqrt(0.05 / 3) / 2)
    result = paired_test(a, b, "t")
    assert result.statistic == pytest.approx(t) and result.statistic == pytest.approx(2.32379, abs=1e-5)
    assert result.p_value == pytest.approx(t_p_value(t, 3)) and result.pairs == 4
    assert paired_test(b, a, "t").statistic == pytest.approx(-t)

    # |d| ranks 1..5, W- = 3 (the -0.3): 5 of the 32 sign patterns have a rank sum <= 3 ({}, 1, 2, 3, 1+2)
    exact = paired_test([0.1, 0.2, -0.3, 0.4, 0.5], [0.0] * 5, "wilcoxon")
    assert exact.statistic == 3 and exact.p_value == pytest.approx(2 * 5 / 32)

    # 17 non-zero differences (4 zeros dropped): eleven |d| = 1 share rank 6, six |d| = 2 share rank 14.5
    d = [1] * 8 + [-1] * 3 + [2] * 5 + [0] * 4 + [-2]
    w_minus, n = 3 * 6 + 14.5, 17
    variance = n * (n + 1) * (2 * n + 1) / 24 - ((11**3 - 11) + (6**3 - 6)) / 48
    z = (w_minus - n * (n + 1) / 4) / math.sqrt(variance)
    approx = paired_test(d, [0] * len(d), "wilcoxon")
    assert approx.statistic == w_minus and approx.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))

    assert paired_test([1.0, 2.0], [1.0, 2.0], "t").p_value == 1.0
    assert paired_test([1.0, 2.0], [1.0, 2.0], "wilcoxon").p_value == 1.0
    assert paired_test([0.5, 0.5], [1 / 3, 1 / 3], "t") == PairedTest(math.inf, 0.0, 2)
    assert paired_test([0.1, 0.2, 0.3], [0.0, 0.1, 0.2], "t") == PairedTest(math.inf, 0.0, 3)  # 0.1 to rounding
    with pytest.raises(ConfigError, match="two equally long samples"):
        paired_test([1.0], [2.0])
    with pytest.raises(ConfigError, match="test 'z'"):
        paired_test(a, b, "z")


RANKS = {  # (run, seed) -> the target's rank in each of six users' lists (None: not in the list of 12)
    ("a", 0): [1, 3, 7, None, 2, 12],
    ("a", 1): [2, 6, None, 4, 1, 9],
    ("b", 0): [4, None, None, 8, 3, None],
    ("b", 1): [None, 5, 11, 6, None, 2],
}


def crafted_run(folder: Path, name: str, users: str = "u") -> Path:
    """A run folder with `seeds.json` over seeds 0 and 1 and a `full` stage whose predictions put each user's target
    at the rank of `RANKS`, written as an evaluation writes them; user IDs `users` + a number."""
    run = folder / name
    scored = []
    for seed in (0, 1):
        predictions = []
        for user, rank in enumerate(RANKS[name, seed]):
            ranked = [f"i{k}" for k in range(1, 13)]
            if rank is not None:
                ranked[rank - 1] = "target"
            predictions.append(Prediction(f"{users}{user}", "target", ranked, [0.0] * 12, 12, 12))
        path = run / ("eval/test/full" if seed == 0 else "seeds/1/eval/test/full")
        path.mkdir(parents=True)
        write_evaluation(path, compute_metrics(predictions, [5, 10], 50) | {"split": "test"}, predictions)
        step = Step(path.name, "eval full", "evaluate", path, (), {}, lambda: None, {}, model="full")
        scored.append([Outcome(step, False, 0.0, json.loads((path / "metrics.json").read_text()))])
    atomic_write_json(run / FILE, seeds_summary(run, [0, 1], scored))
    return run


def test_seeds_summary_and_compare_on_crafted_evaluations(tmp_path):
    """Mean and sample std of each stage are those of its per-seed metrics; the users test pairs each user's metric
    averaged over the seeds, the seeds test the per-seed means (one degree of freedom: a Cauchy p)."""
    a, b = crafted_run(tmp_path, "a"), crafted_run(tmp_path, "b")
    summary = json.loads((a / FILE).read_text())
    recall5 = [sum(r is not None and r <= 5 for r in RANKS["a", seed]) / 6 for seed in (0, 1)]
    assert recall5 == [3 / 6, 3 / 6]
    ndcg10 = [statistics.fmean(1 / math.log2(r + 1) if r and r <= 10 else 0 for r in RANKS["a", s]) for s in (0, 1)]
    (stage,) = summary["stages"]
    assert stage["stage"] == "full" and stage["recall@5"] == {"mean": 0.5, "std": 0.0}
    assert stage["ndcg@10"]["mean"] == pytest.approx(sum(ndcg10) / 2)
    assert stage["ndcg@10"]["std"] == pytest.approx(abs(ndcg10[0] - ndcg10[1]) / math.sqrt(2))
    assert [row["folder"] for row in summary["per_seed"]] == ["eval/test/full", "seeds/1/eval/test/full"]

    users, means = Side.of(a, None).user_means([0, 1])
    assert users == [(f"u{user}", "target") for user in range(6)]
    assert all(statistics.fmean(means[metric]) == pytest.approx(stage[metric]["mean"]) for metric in METRICS)
    by_users = compare(Side.of(a, None), Side.of(b, None))
    recall10 = next(row for row in by_users["metrics"] if row["metric"] == "recall@10")
    # per-user Recall@10 averaged over the seeds: A 1, 1, .5, .5, 1, .5 and B .5, .5, 0, 1, .5, .5
    d = [0.5, 0.5, 0.5, -0.5, 0.5, 0.0]
    assert recall10["statistic"] == pytest.approx(statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(6)))
    assert recall10["pairs"] == 6 and recall10["difference"] == pytest.approx(0.25)
    assert recall10["a"] == {"mean": pytest.approx(0.75), "std": pytest.approx(math.sqrt(1 / 72))}

    by_seeds = compare(Side.of(a, None), Side.of(b, None), unit="seeds")
    recall10 = next(row for row in by_seeds["metrics"] if row["metric"] == "recall@10")
    # per-seed Recall@10: A 4/6, 5/6 and B 3/6, 3/6: d = 1/6, 2/6, t = 3 with one degree of freedom
    assert recall10["statistic"] == pytest.approx(3.0) and recall10["p"] == pytest.approx(t_p_value(3.0, 1))
    assert not recall10["significant"] and recall10["pairs"] == 2

    with pytest.raises(ConfigError, match="same evaluations"):
        compare(Side.of(a, None), Side.of(a, "full"))
    other_users = crafted_run(tmp_path / "other", "b", users="v")  # another build of the data: no pairing at all
    for unit in ("users", "seeds"):
        with pytest.raises(ConfigError, match=r"evaluate other users or targets .*which no paired test compares"):
            compare(Side.of(a, None), Side.of(other_users, None), unit=unit)
    for folder in ("eval/test/full", "seeds/1/eval/test/full"):
        path = b / folder / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"exclude_history": False}))
        if folder == "eval/test/full":
            with pytest.raises(ConfigError, match="evaluations of one stage ranked otherwise"):
                compare(Side.of(a, None), Side.of(b, None))
    with pytest.raises(ConfigError, match=r"'exclude_history': False.*their metrics do not compare"):
        compare(Side.of(a, None), Side.of(b, None))
    with pytest.raises(ConfigError, match="no evaluated stage 'sft'"):
        Side.of(a, "sft")
    with pytest.raises(ConfigError, match="no seeds.json"):
        Side.of(tmp_path, None)


def test_compare_refuses_stale_or_malformed_summaries_and_names_its_output_by_run_test_and_unit(tmp_path):
    """An evaluation redone since seeds.json would pair its new predictions with the old means; a seeds.json without
    its fields, a missing seed row, a predictions line without `ranked` and an alpha outside (0, 1) are errors naming
    the file; two B runs of one folder name, or two tests, get their own default output."""
    a, b = crafted_run(tmp_path, "a"), crafted_run(tmp_path, "b")
    other_b = crafted_run(tmp_path / "elsewhere", "b")
    outputs = {default_output(Side.of(a, None), Side.of(run, None), test, unit)
               for run in (b, other_b) for test in TESTS for unit in ("users", "seeds")}  # fmt: skip
    assert len(outputs) == 8 and all(path.parent == a / "compare" for path in outputs)
    with pytest.raises(ConfigError, match="alpha 7.0: expected a significance level between 0 and 1"):
        compare(Side.of(a, None), Side.of(b, None), alpha=7.0)

    predictions = b / "eval/test/full/predictions.jsonl"
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join([lines[0], json.dumps({"user_id": "u1", "target": "target"}), *lines[2:]]) + "\n")
    with pytest.raises(ConfigError, match=f"{predictions}:2: expected an object with user_id, target and ranked"):
        compare(Side.of(a, None), Side.of(b, None))
    metrics = b / "eval/test/full/metrics.json"
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"recall@10": 0.99}))
    with pytest.raises(ConfigError, match=f"{metrics}: evaluated again since .*seeds.json was written"):
        compare(Side.of(a, None), Side.of(b, None))

    summary = json.loads((a / FILE).read_text())
    (a / FILE).write_text(json.dumps({**summary, "per_seed": summary["per_seed"][:1]}))
    with pytest.raises(ConfigError, match=r"seeds.json: no row of full for seed 1 in per_seed"):
        compare(Side.of(a, None), Side.of(other_b, None))
    (a / FILE).write_text(json.dumps({key: value for key, value in summary.items() if key != "stages"}))
    with pytest.raises(
        ConfigError, match=r"seeds.json: not a seeds summary of `align3gr pipeline --seeds` \(no stages\)"
    ):
        Side.of(a, None)
    (a / FILE).write_text(json.dumps({**summary, "stages": [{**summary["stages"][0], "baseline": True}]}))
    with pytest.raises(ConfigError, match=r"seeds.json: no evaluated model, only baselines \(full\)"):
        Side.of(a, None)


def test_user_score_is_the_term_the_metrics_average():
    ranked = ["a", "b", "a", "c", "d"]
    assert user_score("recall@2", ranked, "c") == 0.0 and user_score("recall@3", ranked, "c") == 1.0
    assert user_score("ndcg@5", ranked, "c") == pytest.approx(1 / math.log2(4))
    for bad in ("coverage@5", "recall@0", "ndcg"):
        with pytest.raises(ConfigError, match="expected recall@K or ndcg@K"):
            user_score(bad, ranked, "c")


def weights(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_seeds_reuse_the_main_run_train_the_others_and_compare(tmp_path, capsys):
    """After a normal run, `--seeds 0,1` reuses the main run as seed 0 and trains seed 1 into seeds/1/ with other
    weights; seeds.json's mean and std are those of the per-seed metrics.json files; `compare` pairs the final stage
    with SFT over the 100 users; `ablate --seeds 0,1` reuses both seeds' pipelines as their +User-SCID and +SP-DPO
    rungs (omitting +C1-C3 and +B2, which the two tasks make equal to the rung before, and +RF-DPO: the config has
    no real-feedback stage) and averages each rung over the two ladders."""
    config, run = small_config(tmp_path), tmp_path / "run"
    run_pipeline(config, run)
    kept = {path: path.stat().st_mtime_ns for path in (run / "sft/meta.json", run / "eval/test/sp_easy/metrics.json")}
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run), "--seeds", "0,1"]) == 0
    assert "Mean ± sample std over seeds 0,1" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    main_summary = json.loads((run / "summary.json").read_text())
    assert {row["status"] for row in main_summary["stages"]} == {"reused"}

    folder = run / "seeds/1"
    seeded = yaml.safe_load((folder / "config.yaml").read_text())
    assert [seeded[s]["seed"] for s in ("data", *SEEDED)] == [0, 1, 1, 1, 1]
    assert weights(folder / "sft") != weights(run / "sft")
    assert weights(folder / "dpo/sp_easy") != weights(run / "dpo/sp_easy")
    assert not (run / "seeds/1/data").exists() and not (run / "seeds/1/eval/test/popular").exists()

    summary = json.loads((run / FILE).read_text())
    assert summary["seeds"] == [0, 1] and summary["num_users"] == 100
    assert [row["stage"] for row in summary["stages"]] == ["popular", "sasrec", "sft", "sp_easy"]
    for row in summary["stages"]:
        main_folder, seeded = run / "eval/test" / row["stage"], run / "seeds/1/eval/test" / row["stage"]
        folders = [main_folder] * 2 if row["stage"] == "popular" else [main_folder, seeded]
        for metric in METRICS:
            values = [json.loads((folder / "metrics.json").read_text())[metric] for folder in folders]
            mean = sum(values) / 2
            std = abs(values[0] - values[1]) / math.sqrt(2)
            assert row[metric]["mean"] == pytest.approx(mean, abs=1e-12)
            assert row[metric]["std"] == pytest.approx(std, abs=1e-12)
    assert "| sp_easy |" in (run / "seeds.md").read_text() and "## Per seed" in (run / "seeds.md").read_text()

    out = tmp_path / "comparison"
    assert main(["compare", str(run), str(run), "--stage-b", "sft", "--test", "wilcoxon", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert (result["a"]["stage"], result["b"]["stage"], result["seeds"]) == ("sp_easy", "sft", [0, 1])
    assert all(row["pairs"] == 100 and 0 <= row["p"] <= 1 for row in result["metrics"])
    assert "Wilcoxon signed-rank test over 100 users" in capsys.readouterr().out
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run), "--seeds", "0,1"]) == 0
    assert json.loads((run / FILE).read_text())["per_seed"] == summary["per_seed"]

    kept = {path: path.stat().st_mtime_ns for path in (run / "seeds/1/sft/meta.json", run / "dpo/sp_easy/meta.json")}
    assert main(["ablate", "--config", str(config), "--run-dir", str(run), "--seeds", "0,1"]) == 0
    assert "mean ± sample std over seeds 0,1" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    ladder = json.loads((run / "ablation" / "ladder.json").read_text())
    assert ladder["seeds"] == [0, 1] and [row["step"] for row in ladder["rows"]] == list(range(1, 8))
    assert [row["rung"] for row in ladder["rows"]] == ["Single+SEQ", "+CF", "+U-I alignment", "+B1", "+User-SCID",
                                                       "+Softmax-DPO", "+SP-DPO"]  # fmt: skip
    assert ladder["left_out"] == ["+C1-C3", "+B2", "+RF-DPO"]
    per_seed = {(row["seed"], row["rung"]): row for row in ladder["per_seed"]}
    for seed, folder in ((0, run), (1, run / "seeds/1")):
        for rung, stage in (("+User-SCID", "sft"), ("+SP-DPO", "sp_easy")):
            evaluated = json.loads((folder / "eval/test" / stage / "metrics.json").read_text())
            assert all(per_seed[seed, rung][m] == evaluated[m] for m in METRICS)
    for row in ladder["rows"]:
        pair = [per_seed[seed, row["rung"]] for seed in (0, 1)]
        for metric in METRICS:
            assert row[metric] == pytest.approx((pair[0][metric] + pair[1][metric]) / 2, abs=1e-12)
            assert row["std"][metric] == pytest.approx(abs(pair[0][metric] - pair[1][metric]) / math.sqrt(2), abs=1e-12)
    assert "p" not in ladder["rows"][0] and all(0 <= row["p"][m] <= 1 for row in ladder["rows"][1:] for m in METRICS)
    assert "## Per seed" in (run / "ablation" / "ladder.md").read_text()
    assert "| p recall@10 | p ndcg@10 |" in (run / "ablation" / "ladder.md").read_text()
    assert (run / "ablation" / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_never_replaces_files_an_earlier_comparison_did_not_write(tmp_path):
    """`--out RUN/seeds` names the run's own seeds.json: refused, the file unchanged; an earlier comparison's output
    is replaced."""
    a, b = crafted_run(tmp_path, "a"), crafted_run(tmp_path, "b")
    before = (a / FILE).read_text()
    result = compare(Side.of(a, None), Side.of(b, None))
    with pytest.raises(ConfigError, match=r"seeds\.json or seeds\.md exists and is not a comparison's"):
        write_comparison(result, a / "seeds")
    assert (a / FILE).read_text() == before
    out = tmp_path / "cmp" / "a_vs_b"
    assert write_comparison(result, out) == write_comparison(result, out)
