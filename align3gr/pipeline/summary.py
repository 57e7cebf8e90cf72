"""The end-of-run report: one row per stage with its wall time, and the metrics of every evaluated model; written
as `summary.json` and `summary.md` in the run folder and printed as a table."""

from __future__ import annotations

from pathlib import Path

from align3gr.console import format_table, markdown_table
from align3gr.io import atomic_write_json, atomic_write_text
from align3gr.pipeline.runner import Outcome

METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def stage_rows(outcomes: list[Outcome]) -> list[dict]:
    """One row per data or model stage; a model's evaluation becomes its row's metrics and `eval s` column."""
    rows: list[dict] = []
    by_model: dict[str, dict] = {}
    for outcome in outcomes:
        step = outcome.step
        if step.kind == "evaluate":
            row = by_model[step.evaluates]
            row["eval s"] = outcome.seconds
            row["eval reused"] = outcome.reused
            row.update({m: outcome.metrics[m] for m in METRICS if m in outcome.metrics})
            row["split"] = outcome.metrics.get("split")
            continue
        row = {"stage": step.label, "path": str(step.path), "status": "reused" if outcome.reused
               else "ran", "seconds": outcome.seconds}  # fmt: skip
        by_model[step.name] = row
        rows.append(row)
    return rows


def write_summary(run_dir: Path, config: dict, outcomes: list[Outcome], wall_seconds: float) -> dict:
    """Write `summary.json` and `summary.md`; returns the summary."""
    summary = {
        "run_dir": str(run_dir),
        "wall_seconds": round(wall_seconds, 1),
        "stages": stage_rows(outcomes),
        "config": config,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "summary.md", summary_markdown(summary))
    return summary


def table_rows(summary: dict) -> list[dict]:
    """The printed table: stage, status, seconds, then the metrics (blank for stages without a model)."""
    rows = []
    for row in summary["stages"]:
        printed = {"stage": row["stage"], "status": row["status"], "seconds": row["seconds"]}
        printed["eval s"] = row.get("eval s", "")
        printed.update({m: row.get(m, "") for m in METRICS})
        rows.append(printed)
    return rows


def summary_text(summary: dict) -> str:
    split = next((row["split"] for row in summary["stages"] if row.get("split")), "test")
    title = f"Run {summary['run_dir']} ({split} split; wall time of this invocation {summary['wall_seconds']:.0f}s)"
    return format_table(table_rows(summary), title)


def markdown_document(rows: list[dict], title: str) -> str:
    """A Markdown document: a `#` title and one table with a column per key of the first row."""
    columns = list(rows[0]) if rows else []
    return f"# {title}\n\n" + markdown_table(columns, [[row[c] for c in columns] for row in rows]) + "\n"


def summary_markdown(summary: dict) -> str:
    """`summary.md`: the printed table in Markdown."""
    title = f"Run `{summary['run_dir']}` (wall time of the last invocation: {summary['wall_seconds']:.0f} s)"
    return markdown_document(table_rows(summary), title)
