"""The report of `align3gr pipeline --seeds`: each metric's mean and sample standard deviation over runs (seeds, or
the ablation's ladders), printed as a table and written as `seeds.json` and `seeds.md`. Kept apart from running the
seeds so that `align3gr compare`, which only reads finished runs, does not import the stages' libraries."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from align3gr.console import format_table, markdown_table
from align3gr.pipeline.summary import METRICS, markdown_document, markdown_list, skipped_lines

FILE = "seeds.json"


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """`{"mean", "std"}`, the standard deviation the sample one (n - 1 in the denominator)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values)}


def spread_by(rows: Sequence[dict], key: str) -> list[tuple[dict, dict[str, dict[str, float]]]]:
    """Per distinct value of `key` (in first-seen order), the first row holding it and each metric's `mean_std`
    over the rows holding it: a stage over the seeds, a rung over the ladders."""
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return [(group[0], {m: mean_std([row[m] for row in group]) for m in METRICS}) for group in groups.values()]


def plus_minus(value: dict[str, float]) -> str:
    return f"{value['mean']:.4f} ± {value['std']:.4f}"


def table_rows(summary: dict) -> list[dict]:
    """A row per stage, each metric as `mean ± std`."""
    return [{"stage": row["stage"] + (" (baseline)" if row["baseline"] else ""),
             **{m: plus_minus(row[m]) for m in METRICS}} for row in summary["stages"]]  # fmt: skip


def title(summary: dict) -> str:
    seeds = ",".join(str(s) for s in summary["seeds"])
    return (f"Mean ± sample std over seeds {seeds} ({summary['split']} split, {summary['num_users']} users; "
            f"seeded: {', '.join(summary['seeded_sections'])})")  # fmt: skip


def seeds_text(summary: dict) -> str:
    """The printed table, then the stages the run left out."""
    return "\n".join([format_table(table_rows(summary), title(summary)), *skipped_lines(summary)])


def seeds_markdown(summary: dict) -> str:
    """`seeds.md`: the mean ± std table, then every seed's metrics and evaluation folder."""
    columns = ["seed", "stage", *METRICS, "folder"]
    per_seed = markdown_table(columns, [[row[c] for c in columns] for row in summary["per_seed"]])
    return (
        markdown_document(table_rows(summary), title(summary))
        + markdown_list(skipped_lines(summary))
        + f"\n## Per seed\n\n{per_seed}\n"
    )
