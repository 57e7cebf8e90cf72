"""Quality of the default run against its baselines (issue 13): each stage's Recall/NDCG@5/10 on the run's split
and its ratio to both in-run baselines (most popular, the collaborative encoder) and to RecBole's SASRec.

    python benchmarks/quality_ml100k.py [--run-dir runs/ml100k] [--config recipes/configs/ml100k.yaml] [--reuse]

Runs `align3gr pipeline` on the config (timed; a finished run is reused stage by stage unless the folder is new),
then reads `eval/SPLIT/*/metrics.json`. `--reuse` only reads an existing run. The SASRec reference is RecBole 1.2.1
(CE loss, max length 20) on the identical MovieLens-100K split, measured with the peer tool: test Recall@10 0.1347,
NDCG@10 0.0635; its ratios are printed only for a run on that split (the default source and filters, every
user).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import yaml

from align3gr.console import format_table
from align3gr.io import read_json

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
RECBOLE_SASREC_TEST = {"recall@10": 0.1347, "ndcg@10": 0.0635}
BASELINES = ("popular", "sasrec")
RECBOLE_SPLIT = {
    "source": {"builder": "movielens", "source": "recbole"},
    "data": {"user_k": 5, "item_k": 5, "max_users": None},
}
"""The run options that decide the split RecBole's SASRec was measured on (the default recipe's)."""


def stage_metrics(run_dir: Path, split: str) -> dict[str, dict]:
    """Metrics of every evaluated model and baseline of the run, in pipeline order (baselines first)."""
    folder = run_dir / "eval" / split
    found = {p.parent.name: read_json(p) for p in sorted(folder.glob("*/metrics.json"))}
    order = [*BASELINES, "sft", *(s["stage"] for s in read_json(run_dir / "summary.json")["stages"])]
    return {name: found[name] for name in dict.fromkeys(order) if name in found}


def on_recbole_split(config: dict) -> bool:
    """Whether a run's config (`config.yaml`) makes the split of `RECBOLE_SASREC_TEST`: its ratios mean nothing on
    another dataset, filter or user sample."""
    return all(
        (config.get(section) or {}).get(key) == value
        for section, values in RECBOLE_SPLIT.items()
        for key, value in values.items()
    )


def ratio(value: float, baseline: float) -> float | str:
    """`value / baseline` to two decimals, "-" when the baseline scored 0 (a small run's baseline may)."""
    return round(value / baseline, 2) if baseline else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ml100k"))
    parser.add_argument("--config", type=Path, default=Path("recipes/configs/ml100k.yaml"))
    parser.add_argument("--reuse", action="store_true", help="Read an existing run; do not run the pipeline.")
    args = parser.parse_args()
    seconds = None
    if not args.reuse:
        start = time.perf_counter()
        command = ["align3gr", "pipeline", "--config", str(args.config), "--run-dir", str(args.run_dir)]
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    split = (config.get("evaluate") or {}).get("split", "test")
    metrics = stage_metrics(args.run_dir, split)
    missing = [b for b in BASELINES if b not in metrics]
    if missing:
        raise SystemExit(f"{args.run_dir}: no eval/{split}/{missing[0]}/metrics.json; run the pipeline first")
    rows = []
    for name, values in metrics.items():
        row = {"model": name, **{m: round(values[m], 4) for m in METRICS}}
        for baseline in BASELINES:
            for m in ("recall@10", "ndcg@10"):
                row[f"{m} / {baseline}"] = ratio(values[m], metrics[baseline][m])
        if split == "test" and on_recbole_split(config) and values.get("exclude_history"):
            for m, reference in RECBOLE_SASREC_TEST.items():  # RecBole's full ranking excludes history too
                row[f"{m} / RecBole SASRec"] = ratio(values[m], reference)
        rows.append(row)
    title = f"{args.run_dir} ({split} split, history excluded: {metrics['sft'].get('exclude_history')})"
    print(format_table(rows, title))
    if seconds is not None:
        print(f"wall time of `align3gr pipeline`: {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
