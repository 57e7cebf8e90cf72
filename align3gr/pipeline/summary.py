"""The end-of-run report: one row per stage with its wall time, the metrics of every evaluated model and of the two
baselines, and each model's Recall@10 and NDCG@10 over those of the stronger baseline (by NDCG@10), so a user sees at
once whether the generative model earns its cost, and the stages the run left out (`--skip-unmet`); written as
`summary.json` and `summary.md` in the run folder and printed as a table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from align3gr.console import format_table, markdown_table
from align3gr.io import atomic_write_json, atomic_write_text, read_json
from align3gr.stage_output import META_FILE

if TYPE_CHECKING:
    from align3gr.pipeline.runner import Outcome

REPORTED_KS = (5, 10)
"""The cut-offs of the run's tables (summary, seeds, ablation ladder, compare): `evaluate.ks` must hold them."""
METRICS = tuple(f"{name}@{k}" for name in ("recall", "ndcg") for k in REPORTED_KS)
RATIOS = ("recall@10", "ndcg@10")
"""The metrics each model is divided by the stronger baseline's (a `METRIC ratio` key of its row)."""


def stage_rows(outcomes: list[Outcome]) -> list[dict]:
    """One row per data or model stage and per baseline; a model's evaluation becomes its row's metrics and `eval s`
    column, a baseline's row has its metrics and `"baseline": true`; a DPO stage whose guard handed on its start model
    says so in its status."""
    rows: list[dict] = []
    by_model: dict[str, dict] = {}
    for outcome in outcomes:
        step = outcome.step
        if step.kind == "evaluate":
            row = by_model[step.evaluates]
            row["eval s"] = outcome.seconds
            row["eval reused"] = outcome.reused
            if outcome.reused is False and row["status"].startswith("reused"):
                row["status"] = row["status"].replace("reused", "reused, evaluated again", 1)
        else:
            row = {"stage": step.label, "path": str(step.path), "status": "reused" if outcome.reused
                   else "ran", "seconds": outcome.seconds}  # fmt: skip
            if step.kind == "dpo":
                meta = read_json(step.path / META_FILE)
                if meta.get("guard", {}).get("kept") == "start":
                    row["status"] += ", start kept"
                elif "handed_on" in meta:
                    row["status"] += ", no rows: start handed on"
            by_model[step.name] = row
            rows.append(row)
        if outcome.metrics is not None:
            row.update({m: outcome.metrics[m] for m in METRICS if m in outcome.metrics})
            row["split"] = outcome.metrics.get("split")
            row.update({"baseline": True} if step.kind == "baseline" else {})
    return rows


def add_ratios(rows: list[dict]) -> str | None:
    """Give each evaluated model's row its `RATIOS` over the stronger baseline's (the one with the higher NDCG@10; None,
    JSON's null, where that baseline scores 0); returns that baseline's name (None without baselines)."""
    baselines = [row for row in rows if row.get("baseline") and all(m in row for m in RATIOS)]
    if not baselines:
        return None
    best = max(baselines, key=lambda row: row["ndcg@10"])
    for row in rows:
        if not row.get("baseline") and all(m in row for m in RATIOS):
            row.update({f"{m} ratio": row[m] / best[m] if best[m] else None for m in RATIOS})
    return best["stage"]


def write_summary(
    run_dir: Path, config: dict, outcomes: list[Outcome], wall_seconds: float, skipped: Sequence[str] = ()
) -> dict:
    """Write `summary.json` and `summary.md`; returns the summary (`ratio_to`: the baseline models are divided
    by; `skipped`: the stages `--skip-unmet` left out, and why)."""
    rows = stage_rows(outcomes)
    summary = {
        "run_dir": str(run_dir),
        "wall_seconds": round(wall_seconds, 1),
        "stages": rows,
        "ratio_to": add_ratios(rows),
        "skipped": list(skipped),
        "config": config,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "summary.md", summary_markdown(summary))
    return summary


def table_rows(summary: dict) -> list[dict]:
    """The printed table: stage, status, seconds, then the metrics (blank for stages without a model), then each
    model's ratios to the stronger baseline (`recall@10 / NAME`, `ndcg@10 / NAME`; blank where it scores 0)."""
    best = summary.get("ratio_to")
    rows = []
    for row in summary["stages"]:
        printed = {"stage": row["stage"], "status": row["status"], "seconds": row["seconds"]}
        printed["eval s"] = row.get("eval s", "")
        printed.update({m: row.get(m, "") for m in METRICS})
        if best is not None:
            printed.update({f"{m} / {best}": _blank(row.get(f"{m} ratio")) for m in RATIOS})
        rows.append(printed)
    return rows


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def skipped_lines(summary: dict) -> list[str]:
    """One line per stage the run left out (`--skip-unmet`), with why."""
    return [f"skipped {line}" for line in summary.get("skipped", [])]


def markdown_list(lines: Sequence[str]) -> str:
    """`lines` as a Markdown list after a blank line (nothing when there are none)."""
    return "".join(f"\n- {line}" for line in lines) + ("\n" if lines else "")


def summary_text(summary: dict) -> str:
    split = next((row["split"] for row in summary["stages"] if row.get("split")), "test")
    title = f"Run {summary['run_dir']} ({split} split; wall time of this invocation {summary['wall_seconds']:.0f}s)"
    return "\n".join([format_table(table_rows(summary), title), *skipped_lines(summary)])


def markdown_document(rows: list[dict], title: str) -> str:
    """A Markdown document: a `#` title and one table with a column per key of the first row."""
    columns = list(rows[0]) if rows else []
    return f"# {title}\n\n" + markdown_table(columns, [[row[c] for c in columns] for row in rows]) + "\n"


def summary_markdown(summary: dict) -> str:
    """`summary.md`: the printed table in Markdown."""
    title = f"Run `{summary['run_dir']}` (wall time of the last invocation: {summary['wall_seconds']:.0f} s)"
    return markdown_document(table_rows(summary), title) + markdown_list(skipped_lines(summary))
