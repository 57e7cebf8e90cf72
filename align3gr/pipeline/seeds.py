"""`align3gr pipeline --seeds 0,1,2,3,4`: the run repeated with other training seeds, and per evaluated stage each
metric's mean and sample standard deviation over them (the "mean ± std over N runs" of a results table).

Run seed S adds S to the `seed` of every training section (`SEEDED`: the collaborative encoder, the tokenizer, SFT
and DPO), so seed 0 is the config itself and is the main run (same lineage, same folders: after a normal run only
the other seeds train). The `data` seed stays: it picks the `max_users` slice and the paraphrases of the dataset's
texts, and repeated runs measure training randomness on one fixed dataset (the same users and targets), which also
lets `align3gr compare` pair the runs user by user. Steps whose lineage is the main run's (the data, the popularity
baseline) are the main run's folders; a seed's other steps are in `seeds/S/`, its config in `seeds/S/config.yaml`.
Writes `seeds.json` and `seeds.md` in the run folder (and `summary.json` of the main run when 0 is a seed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align3gr.errors import ConfigError
from align3gr.io import atomic_write_json, atomic_write_text, make_folders
from align3gr.pipeline.checks import checked_run
from align3gr.pipeline.config import PipelineConfig, load_pipeline_config, write_pipeline_config
from align3gr.pipeline.placement import SEEDED, seed_folder, seeded_config, shared_placement
from align3gr.pipeline.plan import SCORED, Plan, merged_steps
from align3gr.pipeline.run import default_run_dir
from align3gr.pipeline.runner import Outcome, run_steps
from align3gr.pipeline.seeds_report import FILE, seeds_markdown, spread_by
from align3gr.pipeline.summary import METRICS, write_summary


def parse_seeds(text: str) -> list[int]:
    """`"0,1,2"` -> `[0, 1, 2]`: at least two distinct non-negative integers (a sample standard deviation needs
    two runs)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers like 0,1,2,3,4") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r}: expected at least two distinct non-negative seeds, e.g. 0,1,2,3,4")
    return seeds


def seed_plans(config: PipelineConfig, run_dir: Path, seeds: Sequence[int]) -> list[Plan]:
    """One plan per seed, each step in the main run's folder when its lineage is the main run's, else in the seed's
    own folder (`seed_folder`)."""
    return [
        Plan(seeded_config(config, seed), seed_folder(run_dir, seed) / "config.yaml", run_dir,
             shared_placement(config, run_dir, seed))
        for seed in seeds
    ]  # fmt: skip


def stage_name(outcome: Outcome) -> str:
    """What an evaluation is of: the model (`sft`, a DPO stage) or the baseline (`popular`, `sasrec`)."""
    return outcome.step.model or outcome.step.label


def seeds_summary(run_dir: Path, seeds: Sequence[int], scored: Sequence[Sequence[Outcome]]) -> dict:
    """`per_seed`: a row per seed and evaluated stage (its metrics and evaluation folder); `stages`: per stage, each
    metric's mean and sample std over the seeds."""
    per_seed = [
        {"seed": seed, "stage": stage_name(outcome), "baseline": outcome.step.kind == "baseline",
         **{m: outcome.metrics[m] for m in METRICS}, "folder": outcome.step.path.relative_to(run_dir).as_posix()}
        for seed, outcomes in zip(seeds, scored, strict=True) for outcome in outcomes
    ]  # fmt: skip
    stages = [{"stage": first["stage"], "baseline": first["baseline"], **spread}
              for first, spread in spread_by(per_seed, "stage")]  # fmt: skip
    first = scored[0][0].metrics
    return {"run_dir": str(run_dir), "seeds": list(seeds), "seeded_sections": list(SEEDED), "split": first["split"],
            "num_users": first["num_users"], "stages": stages, "per_seed": per_seed}  # fmt: skip


def run_seeds(
    config_path: str | Path,
    seeds: Sequence[int],
    run_dir: str | Path | None = None,
    launcher: str | None = None,
    skip_unmet: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict:
    """Run (or continue) the pipeline of `config_path` (with `overrides`) once per seed in `run_dir` (stages under
    `launcher`, needs checked first with `skip_unmet`, the run folder locked, as in `run_pipeline`); writes
    `seeds.json` and `seeds.md` (and the main run's `summary.json` when 0 is a seed) and returns the seeds summary."""
    start = time.perf_counter()
    config = load_pipeline_config(config_path, overrides)
    run = Path(run_dir) if run_dir is not None else default_run_dir(config_path)
    with checked_run(config, run, "align3gr pipeline --seeds", skip_unmet, launcher) as checked:
        plans = seed_plans(checked.config, run, seeds)
        for plan in plans:
            make_folders(plan.config_file.parent)
            write_pipeline_config(plan.config, plan.config_file)
        steps, own = merged_steps([(plan, checked.dpo) for plan in plans])
        outcomes = {outcome.step.name: outcome for outcome in checked.as_run(run_steps(steps, run, launcher))}
        per_seed = [[outcomes[step.name] for step in seed_steps] for seed_steps in own]
        if 0 in seeds:
            write_summary(run, checked.config.as_dict(), per_seed[list(seeds).index(0)],
                          time.perf_counter() - start, checked.skipped)  # fmt: skip
        scored = [[outcome for outcome in outcomes if outcome.step.kind in SCORED] for outcomes in per_seed]
        summary = seeds_summary(run, seeds, scored)
        summary["skipped"] = list(checked.skipped)
        summary["wall_seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_json(run / FILE, summary)
        atomic_write_text(run / "seeds.md", seeds_markdown(summary))
        return summary
