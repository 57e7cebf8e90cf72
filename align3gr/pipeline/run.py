"""`run_pipeline`: one config's stages in one run folder, checked, locked and summarised."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from align3gr.pipeline.checks import checked_run
from align3gr.pipeline.config import load_pipeline_config, write_pipeline_config
from align3gr.pipeline.plan import Plan, in_run, pipeline_steps
from align3gr.pipeline.runner import run_steps
from align3gr.pipeline.summary import write_summary


def default_run_dir(config_path: str | Path) -> Path:
    """`runs/NAME` for `recipes/configs/NAME.yaml`."""
    return Path("runs") / Path(config_path).stem


def run_pipeline(
    config_path: str | Path,
    run_dir: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    launcher: str | None = None,
    skip_unmet: bool = False,
) -> dict:
    """Run (or continue) the pipeline of `config_path` in `run_dir`; writes `config.yaml`, `summary.json` and
    `summary.md` there and returns the summary. With `launcher` (e.g. "accelerate launch --num_processes 8"), the
    training and evaluation stages run as `LAUNCHER -m align3gr.cli STAGE ...` on its processes. What the stages need
    is checked before they run (`align3gr.pipeline.checks`: one error listing every unmet need, or with `skip_unmet`
    the stages whose input is absent left out), and the run folder is locked meanwhile (`align3gr.run_lock`)."""
    start = time.perf_counter()
    config = load_pipeline_config(config_path, overrides)
    run = Path(run_dir) if run_dir is not None else default_run_dir(config_path)
    with checked_run(config, run, "align3gr pipeline", skip_unmet, launcher) as checked:
        write_pipeline_config(checked.config, run / "config.yaml")
        plan = Plan(checked.config, run / "config.yaml", run, in_run(run))
        outcomes = checked.as_run(run_steps(pipeline_steps(plan, dpo=checked.dpo), run, launcher))
        return write_summary(run, checked.config.as_dict(), outcomes, time.perf_counter() - start, checked.skipped)
