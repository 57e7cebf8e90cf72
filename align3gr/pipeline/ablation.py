"""`align3gr ablate`: the incremental alignment ladder of Align3GR Figure 4 on the user's own config.

Each rung adds one module to the rung before; the last rung is the config itself (the full method):

1. Single+SEQ: item-only semantic IDs (no CF, no user side) and the sequential task only;
2. +CF: collaborative features in the item tokenizer;
3. +U-I alignment: the dual SCID tokenizer with the U2I loss (the config's tokenizer);
4. +C1-C3: the asymmetric (C1-1, C1-2), intention (C2) and preference (C3) tasks;
5. +B1: item alignment;
6. +User-SCID: the user's SCID in prompts;
7. +B2: user alignment (the config's SFT);
8. +Softmax-DPO: one Softmax-DPO stage with random rejected items (Table 5's Softmax-DPO);
9. +SP-DPO: the config's self-play stages instead;
10. +RF-DPO: the config's self-play then real-feedback stages (the full method).

Steps whose lineage equals the main run's live in the main run's folders (so `align3gr pipeline` and `ablate` on one
run folder share them); the others go to `ablation/HASH/`. Rungs that share a lineage share the steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from align3gr.console import format_table
from align3gr.io import atomic_write_json, atomic_write_text, sha256_json
from align3gr.pipeline import default_run_dir
from align3gr.pipeline.checks import checked_run
from align3gr.pipeline.config import PipelineConfig, load_pipeline_config, write_pipeline_config
from align3gr.pipeline.plan import Placement, Plan, Step, lineage_key, merged_steps, pipeline_steps
from align3gr.pipeline.runner import run_steps
from align3gr.pipeline.summary import METRICS, markdown_document

C_TASKS = ("asym_title", "asym_item", "intention", "preference")


@dataclass(frozen=True)
class Rung:
    """One configuration of the ladder: its label, its config, and whether it runs the DPO stages."""

    label: str
    config: PipelineConfig
    dpo: bool


def ladder(config: PipelineConfig) -> list[Rung]:
    """The ten rungs of Figure 4, derived from `config` (the last rung)."""
    tasks = config.sft.tasks

    def sft(extra: tuple[str, ...], with_user_scid: bool, tokenizer: PipelineConfig) -> PipelineConfig:
        kept = [t for t in tasks if t == "seq" or t in extra]
        return tokenizer.replace("sft", tasks=kept, with_user_scid=with_user_scid)

    item_only = {"dual": False, "u2i": False, "das": False}
    single = config.replace("tokenize", use_cf=False, **item_only)
    single_cf = config.replace("tokenize", use_cf=True, **item_only)
    self_play = [s for s in config.dpo.stages if s.startswith("sp_")]
    return [
        Rung("Single+SEQ", sft((), False, single), False),
        Rung("+CF", sft((), False, single_cf), False),
        Rung("+U-I alignment", sft((), False, config), False),
        Rung("+C1-C3", sft(C_TASKS, False, config), False),
        Rung("+B1", sft((*C_TASKS, "item_align"), False, config), False),
        Rung("+User-SCID", sft((*C_TASKS, "item_align"), True, config), False),
        Rung("+B2", config, False),
        Rung("+Softmax-DPO", config.replace("dpo", stages=["sp_random"]), True),
        Rung("+SP-DPO", config.replace("dpo", stages=self_play or ["sp_easy", "sp_medium", "sp_hard"]), True),
        Rung("+RF-DPO", config, True),
    ]


def shared_placement(config: PipelineConfig, run_dir: Path, elsewhere: Path | None = None) -> Placement:
    """Main-run folders for the lineages of `config`'s own pipeline; any other lineage in `elsewhere` (one other
    configuration's folder) or, by default, in `ablation/HASH/` (a folder per lineage, which rungs share)."""
    main: dict[str, str] = {}

    def record(relative: str, lineage: dict) -> Path:
        main[relative] = lineage_key(lineage)
        return run_dir / relative

    pipeline_steps(Plan(config, run_dir / "config.yaml", run_dir, record))

    def place(relative: str, lineage: dict) -> Path:
        key = lineage_key(lineage)
        if main.get(relative) == key:
            return run_dir / relative
        return (elsewhere if elsewhere is not None else run_dir / "ablation" / key) / relative

    return place


def ladder_steps(config: PipelineConfig, run_dir: Path) -> tuple[list[Step], list[tuple[Rung, str]]]:
    """Every step the ladder needs, each once, in an order that respects inputs; and per rung the name of the
    evaluation step whose metrics are its result (its last model's). Each rung's stage commands read its config
    from `rung_config_file` (written by `run_ablation`)."""
    place = shared_placement(config, run_dir)
    rungs = ladder(config)
    plans = [(Plan(rung.config, rung_config_file(rung, run_dir), run_dir, place), rung.dpo) for rung in rungs]
    steps, own = merged_steps(plans)
    return steps, [(rung, rung_steps[-1].name) for rung, rung_steps in zip(rungs, own, strict=True)]


def rung_config_file(rung: Rung, run_dir: Path) -> Path:
    """Where a rung's config is written for its stage commands: named by its content."""
    return run_dir / "ablation" / "configs" / f"{sha256_json(rung.config.as_dict())[:12]}.yaml"


def plot_ladder(rows: list[dict], path: Path) -> None:
    """Grouped bars of Recall@10 and NDCG@10 (%) per rung: Figure 4 draws Recall@10, NDCG@10 shows whether a rung
    that holds recall moves the hits up or down the list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.4
    figure, axis = plt.subplots(figsize=(1.0 + 0.9 * len(rows), 4.2))
    bars_of = (("recall@10", "#4C72B0", -width / 2), ("ndcg@10", "#DD8452", width / 2))
    for metric, color, offset in bars_of:
        values = [100 * row[metric] for row in rows]
        bars = axis.bar([i + offset for i in range(len(rows))], values, width, color=color, label=metric)
        axis.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7)
    axis.set_xticks(range(len(rows)), [row["rung"] for row in rows], rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("metric (%)")
    axis.legend(fontsize=8, loc="upper left")
    axis.set_title(f"Incremental alignment ({rows[0]['split']} split)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_ablation(config_path: str | Path, run_dir: str | Path | None = None, launcher: str | None = None) -> dict:
    """Run (or continue) the ladder of `config_path` in `run_dir` (training and evaluation under `launcher` if
    given, its needs checked first and its run folder locked, as in `run_pipeline`); writes `ablation/ladder.json`,
    `ladder.md` and `ladder.png` and returns the summary."""
    start = time.perf_counter()
    config = load_pipeline_config(config_path)
    run = Path(run_dir) if run_dir is not None else default_run_dir(config_path)
    with checked_run(config, run, "align3gr ablate", launcher=launcher):
        steps, results = ladder_steps(config, run)
        (run / "ablation" / "configs").mkdir(parents=True, exist_ok=True)
        for rung, _ in results:
            write_pipeline_config(rung.config, rung_config_file(rung, run))
        outcomes = {outcome.step.name: outcome for outcome in run_steps(steps, run, launcher)}
        rows = []
        for number, (rung, evaluation) in enumerate(results, start=1):
            metrics = outcomes[evaluation].metrics
            rows.append({"step": number, "rung": rung.label, **{m: metrics[m] for m in METRICS},
                         "split": metrics["split"], "model": str(outcomes[evaluation].step.evaluates)})  # fmt: skip
        out = run / "ablation"
        out.mkdir(parents=True, exist_ok=True)
        summary = {"run_dir": str(run), "wall_seconds": round(time.perf_counter() - start, 1), "rows": rows}
        atomic_write_json(out / "ladder.json", summary)
        atomic_write_text(out / "ladder.md", markdown_document(rows, f"Incremental alignment ladder of `{run}`"))
        plot_ladder(rows, out / "ladder.png")
        return summary


def ladder_text(summary: dict) -> str:
    """The printed table: each rung's metrics."""
    rows = [{k: v for k, v in row.items() if k not in ("split", "model")} for row in summary["rows"]]
    return format_table(rows, f"Incremental alignment ladder ({summary['rows'][0]['split']} split)")
