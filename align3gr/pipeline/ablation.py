"""`align3gr ablate`: the incremental alignment ladder of Align3GR Figure 4 on the user's own config.

Each rung adds one module to the rung before; the last rung is the config itself (the full method):

1. Single+SEQ: item-only semantic IDs (no CF, no user side) and the sequential task only;
2. +CF: collaborative features in the item tokenizer;
3. +U-I alignment: the dual SCID tokenizer with the U2I loss (the config's tokenizer);
4. +C1-C3: the asymmetric (C1-1, C1-2), intention (C2) and preference (C3) tasks;
5. +B1: item alignment;
6. +User-SCID: the user's SCID in prompts (when the config puts it there);
7. +B2: user alignment (the config's SFT);
8. +Softmax-DPO: one Softmax-DPO stage with random rejected items (Table 5's Softmax-DPO);
9. +SP-DPO: the config's self-play stages instead;
10. +RF-DPO: the config's self-play then real-feedback stages (the full method).

A rung that adds nothing the config has (e.g. +B2 when `sft.tasks` lacks user_align, +User-SCID when
`sft.with_user_scid` is off, or +RF-DPO when the DPO stages are all self-play, or were left out by `--skip-unmet`) is
not trained again: the ladder omits it and says so.

Steps whose lineage equals the main run's live in the main run's folders (so `align3gr pipeline` and `ablate` on one
run folder share them), and with `--seeds` those equal to seed S's own pipeline in `seeds/S/` (shared with `pipeline
--seeds`); the others go to `ablation/HASH/`. Rungs that share a lineage share the steps. A run folder whose recorded
config (`config.yaml`) is not the one ablated is refused (`check_main_run`): its last rungs would retrain over the
main run's models.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from align3gr.config import read_yaml_mapping
from align3gr.console import format_table, markdown_table
from align3gr.errors import ConfigError
from align3gr.io import atomic_write_bytes, atomic_write_json, atomic_write_text, make_folders, sha256_json
from align3gr.pipeline.checks import checked_run
from align3gr.pipeline.compare import paired_test, user_means
from align3gr.pipeline.config import PipelineConfig, load_pipeline_config, write_pipeline_config
from align3gr.pipeline.placement import seed_folder, seeded_config, shared_placement
from align3gr.pipeline.plan import Plan, Step, merged_steps
from align3gr.pipeline.run import default_run_dir
from align3gr.pipeline.runner import run_steps
from align3gr.pipeline.seeds_report import plus_minus, spread_by
from align3gr.pipeline.summary import METRICS, markdown_document, markdown_list, skipped_lines

C_TASKS = ("asym_title", "asym_item", "intention", "preference")
TESTED = ("recall@10", "ndcg@10")
"""The metrics whose p-value against the rung before the tables show (ladder.json holds every metric's)."""
TEST_NOTE = ("p: two-sided paired t-test against the rung before, over the users (each user's metric averaged over "
             "the seeds)")  # fmt: skip


@dataclass(frozen=True)
class Rung:
    """One configuration of the ladder: its label, its config, and whether it runs the DPO stages."""

    label: str
    config: PipelineConfig
    dpo: bool


def require_sequential_task(config: PipelineConfig, path: str | Path) -> None:
    """Refuse a config (read from `path`) whose `sft.tasks` lacks `seq`: the ladder's first rung trains on the
    sequential task alone."""
    if "seq" not in config.sft.tasks:
        raise ConfigError(
            f"{path}: sft.tasks={config.sft.tasks} lacks seq; the ablation ladder starts from Single+SEQ, SFT on the "
            "sequential task alone, so the config it ablates must train seq too"
        )


def ladder(config: PipelineConfig) -> list[Rung]:
    """The ten rungs of Figure 4, derived from `config` (the last rung; its `sft.tasks` hold `seq`:
    `require_sequential_task`)."""
    tasks = config.sft.tasks

    def sft(extra: tuple[str, ...], with_user_scid: bool, tokenizer: PipelineConfig) -> PipelineConfig:
        kept = [t for t in tasks if t == "seq" or t in extra]
        return tokenizer.replace("sft", tasks=kept, with_user_scid=with_user_scid)

    item_only = {"dual": False, "u2i": False, "das": False, "das_cf": False}
    single = config.replace("tokenize", use_cf=False, **item_only)
    single_cf = config.replace("tokenize", use_cf=True, **item_only)
    self_play = [s for s in config.dpo.stages if s.startswith("sp_")]
    return [
        Rung("Single+SEQ", sft((), False, single), False),
        Rung("+CF", sft((), False, single_cf), False),
        Rung("+U-I alignment", sft((), False, config), False),
        Rung("+C1-C3", sft(C_TASKS, False, config), False),
        Rung("+B1", sft((*C_TASKS, "item_align"), False, config), False),
        Rung("+User-SCID", sft((*C_TASKS, "item_align"), config.sft.with_user_scid, config), False),
        Rung("+B2", config, False),
        Rung("+Softmax-DPO", config.replace("dpo", stages=["sp_random"]), True),
        Rung("+SP-DPO", config.replace("dpo", stages=self_play or ["sp_easy", "sp_medium", "sp_hard"]), True),
        Rung("+RF-DPO", config, True),
    ]


SKIPPABLE = ("sft.tasks", "dpo.stages")
"""The options `--skip-unmet` may reduce once the data is built (`align3gr.pipeline.checks`)."""


def check_main_run(config: PipelineConfig, run: Path, config_path: str | Path, ignoring: Sequence[str] = ()) -> None:
    """Refuse to ablate `config` in a run folder whose pipeline ran another config (its `config.yaml`; options in
    `ignoring` aside): the ladder's last rungs are the main run's own folders, and would retrain over its models (and
    its data), leaving its `config.yaml` and summary describing models it no longer has."""
    recorded = run / "config.yaml"
    if not recorded.is_file():
        return
    ran, ablated = read_yaml_mapping(recorded), yaml.safe_load(yaml.safe_dump(config.as_dict(), sort_keys=False))
    differ = [section for section in ran if section not in ablated]
    for section, options in ablated.items():
        recorded_options = ran.get(section) or {}
        for key in sorted(recorded_options):  # an option the run's release did not have yet is not a difference
            if options.get(key) != recorded_options.get(key) and f"{section}.{key}" not in ignoring:
                differ.append(f"{section}.{key}")
    if differ:
        raise ConfigError(
            f"{recorded}: this run was made with another config than {config_path} ({', '.join(differ[:6])}"
            f"{', ...' if len(differ) > 6 else ''} differ); the ladder's last rungs are the run's own models and "
            f"would be retrained over them. Ablate the run's config (--config {recorded}), run `align3gr pipeline "
            f"--config {config_path} --run-dir {run}` first, or ablate into another --run-dir"
        )


def trained_rungs(config: PipelineConfig, dpo: bool = True) -> tuple[list[Rung], list[str]]:
    """The rungs of `ladder(config)` that train something new, and the labels of the others: a rung that trains
    what the rung before it trains, and the last rung when `dpo` is false (its DPO stages cannot run)."""
    rungs = ladder(config)
    kept = [rung for before, rung in zip([None, *rungs], rungs, strict=False) if before is None
            or (rung.config, rung.dpo) != (before.config, before.dpo)]  # fmt: skip
    if not dpo:
        kept = [rung for rung in kept if rung is not rungs[-1]]
    return kept, [rung.label for rung in rungs if rung not in kept]


def ladder_steps(
    config: PipelineConfig, run_dir: Path, seeds: Sequence[int] = (0,), dpo: bool = True
) -> tuple[list[Step], list[tuple[int, Rung, str]]]:
    """Every step the ladders of `seeds` need, each once, in an order that respects inputs; and per seed and rung
    the name of the evaluation step whose metrics are its result (its last model's). Seed S's ladder is that of
    `config` with its training seeds shifted by S, as `pipeline --seeds` shifts them; its rungs are
    `trained_rungs(config, dpo)`. Each rung's stage commands read its config from `rung_config_file` (written by
    `run_ablation`)."""
    plans, rungs = [], []
    for seed in seeds:
        place = shared_placement(config, run_dir, seed)
        for rung in trained_rungs(seeded_config(config, seed), dpo)[0]:
            plans.append((Plan(rung.config, rung_config_file(rung, run_dir), run_dir, place), rung.dpo))
            rungs.append((seed, rung))
    steps, own = merged_steps(plans)
    return steps, [(seed, rung, rung_steps[-1].name) for (seed, rung), rung_steps in zip(rungs, own, strict=True)]


def rung_config_file(rung: Rung, run_dir: Path) -> Path:
    """Where a rung's config is written for its stage commands: named by its content."""
    return run_dir / "ablation" / "configs" / f"{sha256_json(rung.config.as_dict())[:12]}.yaml"


def plot_ladder(rows: list[dict], seeds: Sequence[int], path: Path) -> None:
    """Grouped bars of Recall@10 and NDCG@10 (%) per rung, with the sample std as error bars over several seeds:
    Figure 4 draws Recall@10, NDCG@10 shows whether a rung that holds recall moves the hits up or down the list.
    Written to `path` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.4
    figure, axis = plt.subplots(figsize=(1.0 + 0.9 * len(rows), 4.2))
    bars_of = (("recall@10", "#4C72B0", -width / 2), ("ndcg@10", "#DD8452", width / 2))
    for metric, color, offset in bars_of:
        values = [100 * row[metric] for row in rows]
        errors = [100 * row["std"][metric] for row in rows] if len(seeds) > 1 else None
        bars = axis.bar([i + offset for i in range(len(rows))], values, width, yerr=errors, capsize=2, color=color,
                        label=metric)  # fmt: skip
        axis.bar_label(bars, labels=[f"{v:.1f}" for v in values], label_type="center", color="white", fontsize=7)
    axis.set_xticks(range(len(rows)), [row["rung"] for row in rows], rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("metric (%)")
    axis.legend(fontsize=8, loc="upper left")
    over = f", mean ± std over seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else ""
    axis.set_title(f"Incremental alignment ({rows[0]['split']} split{over})", fontsize=10)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, image.getvalue())


def ladder_rows(per_seed: list[dict], seeds: Sequence[int]) -> list[dict]:
    """A row per rung: its metrics (one seed), or each metric's mean and, under `std`, its sample std (several)."""
    if len(seeds) == 1:
        return [{k: v for k, v in row.items() if k != "seed"} for row in per_seed]
    return [{"step": first["step"], "rung": first["rung"], **{m: spread[m]["mean"] for m in METRICS},
             "std": {m: spread[m]["std"] for m in METRICS}, "split": first["split"]}
            for first, spread in spread_by(per_seed, "step")]  # fmt: skip


def rung_tests(predictions: Sequence[Path], rungs: int) -> list[dict[str, float]]:
    """Per rung, each metric's two-sided paired t-test p-value against the rung before, over the users (each user's
    metric averaged over the seeds); empty for the first rung. `predictions`: every evaluation's predictions.jsonl,
    seed by seed and rung by rung within a seed, as `ladder_steps` lists them."""
    evaluated = [user_means(predictions[rung::rungs]) for rung in range(rungs)]
    for rung, (users, _) in enumerate(evaluated):
        if users != evaluated[0][0]:
            raise ConfigError(f"{predictions[rung]}: other users or targets than {predictions[0]}; rungs pair by user")
    means = [values for _, values in evaluated]
    return [{}] + [{m: paired_test(now[m], before[m]).p_value for m in METRICS} for before, now in pairwise(means)]


def shown_rows(summary: dict) -> list[dict]:
    """The rows of the printed and Markdown tables: step, rung, each metric (`mean ± std` over several seeds) and the
    p-values of `TESTED` against the rung before."""

    def shown(row: dict, metric: str) -> object:
        return plus_minus({"mean": row[metric], "std": row["std"][metric]}) if "std" in row else row[metric]

    def p(row: dict, metric: str) -> str:
        return f"{row['p'][metric]:.3g}" if "p" in row else ""

    return [{"step": row["step"], "rung": row["rung"], **{m: shown(row, m) for m in METRICS},
             **{f"p {m}": p(row, m) for m in TESTED}} for row in summary["rows"]]  # fmt: skip


def ladder_title(summary: dict, where: str = "") -> str:
    """`Incremental alignment ladder[ of WHERE] (SPLIT split[; mean ± sample std over seeds S])`."""
    seeds = summary["seeds"]
    over = f"; mean ± sample std over seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else ""
    return f"Incremental alignment ladder{where} ({summary['rows'][0]['split']} split{over})"


def ladder_markdown(summary: dict) -> str:
    """`ladder.md`: the printed table (`shown_rows`), with each rung's evaluated model (one seed), or followed by every
    seed's metrics and evaluated model (several); `ladder_notes` below the first table."""
    title = ladder_title(summary, f" of `{summary['run_dir']}`")
    notes = markdown_list(ladder_notes(summary))
    if len(summary["seeds"]) == 1:
        shown = zip(shown_rows(summary), summary["rows"], strict=True)
        return markdown_document([{**row, "model": rung["model"]} for row, rung in shown], title) + notes
    columns = ["seed", "step", "rung", *METRICS, "model"]
    per_seed = markdown_table(columns, [[row[c] for c in columns] for row in summary["per_seed"]])
    return markdown_document(shown_rows(summary), title) + notes + f"\n## Per seed\n\n{per_seed}\n"


def run_ablation(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    launcher: str | None = None,
    seeds: Sequence[int] = (0,),
    skip_unmet: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict:
    """Run (or continue) the ladder of `config_path` (with `overrides`) in `run_dir` once per seed in `seeds`
    (training and evaluation under `launcher` if given, its needs checked first with `skip_unmet` and its run folder
    locked, as in `run_pipeline`); writes `ablation/ladder.json`, `ladder.md` and `ladder.png` and returns the
    summary."""
    start = time.perf_counter()
    run = Path(run_dir) if run_dir is not None else default_run_dir(config_path)
    config = load_pipeline_config(config_path, overrides)
    require_sequential_task(config, config_path)
    # before the data is built (which the checks may do), all but what `--skip-unmet` reduces; after, all of it
    check_main_run(config, run, config_path, SKIPPABLE if skip_unmet else ())
    with checked_run(config, run, "align3gr ablate", skip_unmet, launcher) as checked:
        config = checked.config
        check_main_run(config, run, config_path)
        if not (run / "config.yaml").is_file():  # the last rungs are this config's folders: another is refused here
            write_pipeline_config(config, run / "config.yaml")
        steps, results = ladder_steps(config, run, seeds, checked.dpo)
        make_folders(run / "ablation" / "configs")
        for _, rung, _ in results:
            write_pipeline_config(rung.config, rung_config_file(rung, run))
        for seed in (s for s in seeds if s):
            make_folders(seed_folder(run, seed))
            write_pipeline_config(seeded_config(config, seed), seed_folder(run, seed) / "config.yaml")
        outcomes = {outcome.step.name: outcome for outcome in run_steps(steps, run, launcher)}
        per_seed, rungs = [], len(results) // len(seeds)
        for index, (seed, rung, evaluation) in enumerate(results):
            metrics = outcomes[evaluation].metrics
            per_seed.append({"seed": seed, "step": index % rungs + 1, "rung": rung.label,
                             **{m: metrics[m] for m in METRICS}, "split": metrics["split"],
                             "model": str(outcomes[evaluation].step.evaluates)})  # fmt: skip
        out = run / "ablation"
        predictions = [outcomes[evaluation].step.path / "predictions.jsonl" for _, _, evaluation in results]
        tests = rung_tests(predictions, rungs)
        rows = [{**row, **({"p": p} if p else {})} for row, p in zip(ladder_rows(per_seed, seeds), tests, strict=True)]
        summary = {"run_dir": str(run), "seeds": list(seeds), "wall_seconds": round(time.perf_counter() - start, 1),
                   "rows": rows, "skipped": list(checked.skipped),
                   "left_out": trained_rungs(config, checked.dpo)[1]}  # fmt: skip
        if len(seeds) > 1:
            summary["per_seed"] = per_seed
        atomic_write_json(out / "ladder.json", summary)
        atomic_write_text(out / "ladder.md", ladder_markdown(summary))
        plot_ladder(summary["rows"], seeds, out / "ladder.png")
        return summary


def ladder_notes(summary: dict) -> list[str]:
    """What the p columns are; the stages `--skip-unmet` left out, then the rungs the ladder omits
    (`trained_rungs`), one line each."""
    left_out = summary.get("left_out", [])
    return [TEST_NOTE, *skipped_lines(summary)] + [f"no rung {label}: nothing of the run's config to add there"
                                                   for label in left_out]  # fmt: skip


def ladder_text(summary: dict) -> str:
    """The printed table: each rung's metrics, then what the ladder left out."""
    return "\n".join([format_table(shown_rows(summary), ladder_title(summary)), *ladder_notes(summary)])
