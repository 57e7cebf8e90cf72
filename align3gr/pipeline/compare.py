"""`align3gr compare RUN_A RUN_B`: whether one configuration beats another over the same seeds, with a two-sided
paired significance test per metric (the "p < 0.05 vs baseline" of a results table).

Both run folders come from `align3gr pipeline --seeds` (their `seeds.json`); the seeds both ran are paired, A's
seed S with B's seed S. Per metric it reports each side's mean ± sample std over those seeds, A - B, and the test:

- unit `users` (default): each user's metric (`predictions.jsonl`) averaged over the seeds, A against B for every
  evaluated user; the runs must evaluate the same users and targets (one dataset, which `--seeds` keeps fixed);
- unit `seeds`: the per-seed means (`metrics.json`), few pairs (with 5 seeds no two-sided Wilcoxon p is below
  0.0625).

Test `t` is Student's paired t-test, `wilcoxon` the Wilcoxon signed-rank test (pairs that do not differ are dropped,
though counted in `pairs`; SciPy's method choice: up to 50 pairs the exact distribution when no difference is zero or
tied, an exact permutation test when some are and there are at most 13 pairs, otherwise the normal approximation
with the tie correction), both SciPy's. When no pair differs p is 1 (neither test is defined then). The four
metrics are tested separately, without a multiple-comparison correction. A and B may be two stages of one run
(`--stage-b sasrec`: the model against a baseline on the same seeds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from align3gr.console import format_table
from align3gr.errors import ConfigError, DataError
from align3gr.io import atomic_write_json, atomic_write_text, iter_json_lines, make_folders, read_json, sha256_json
from align3gr.metrics import user_score
from align3gr.pipeline.seeds_report import FILE, mean_std, plus_minus
from align3gr.pipeline.summary import METRICS, markdown_document

TESTS = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
UNITS = ("users", "seeds")
PROTOCOL = ("split", "exclude_history", "beam_size")
"""What makes two evaluations' metrics comparable, as each `metrics.json` records it."""


@dataclass(frozen=True)
class PairedTest:
    """A test's statistic (t, or Wilcoxon's smaller rank sum), two-sided p-value and number of pairs."""

    statistic: float
    p_value: float
    pairs: int


CONSTANT = 1e-9
"""Differences whose spread is within this share of their size are one constant difference to the t-test (float
subtraction leaves them unequal in the last bits)."""


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "t") -> PairedTest:
    """Two-sided paired `test` (a key of `TESTS`) of `a` against `b`, pair i being `(a[i], b[i])`; when every pair
    differs by the same non-zero amount (to `CONSTANT`), t is infinite and its p 0 (SciPy would divide a rounding
    error)."""
    if test not in TESTS:
        raise ConfigError(f"test {test!r}: expected one of {', '.join(TESTS)}")
    if len(a) != len(b) or len(a) < 2:
        raise ConfigError(f"a paired test needs two equally long samples of at least 2, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    if not any(differences):
        return PairedTest(0.0, 1.0, len(a))
    if test == "t" and max(differences) - min(differences) <= CONSTANT * max(map(abs, differences)):
        return PairedTest(math.copysign(math.inf, differences[0]), 0.0, len(a))
    from scipy import stats

    result = stats.ttest_rel(a, b) if test == "t" else stats.wilcoxon(a, b)
    return PairedTest(float(result.statistic), float(result.pvalue), len(a))


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a run folder, its `seeds.json`, the evaluated stage."""

    run: Path
    summary: dict
    stage: str

    @classmethod
    def of(cls, run: str | Path, stage: str | None) -> Side:
        """The run's `seeds.json` and `stage` (default: its last evaluated model, the full method)."""
        run = Path(run)
        if not (run / FILE).is_file():
            raise ConfigError(f"{run}: no {FILE}; run `align3gr pipeline --config CONFIG --run-dir {run} --seeds "
                              "0,1,2,3,4` first")  # fmt: skip
        summary = read_json(run / FILE)
        missing = [key for key in ("seeds", "split", "stages", "per_seed") if key not in summary]
        rows = [row for key in ("stages", "per_seed") for row in summary.get(key, [])]
        if missing or not all({"stage", "baseline"} <= set(row) for row in rows):
            fields = ", ".join(missing) or "rows with 'stage' and 'baseline'"
            raise ConfigError(f"{run / FILE}: not a seeds summary of `align3gr pipeline --seeds` (no {fields})")
        names = [row["stage"] for row in summary["stages"]]
        models = [row["stage"] for row in summary["stages"] if not row["baseline"]]
        if stage is None and not models:
            raise ConfigError(f"{run / FILE}: no evaluated model, only baselines ({', '.join(names)})")
        if stage is None:
            stage = models[-1]
        if stage not in names:
            raise ConfigError(f"{run}: no evaluated stage {stage!r}; its stages are {', '.join(names)}")
        return cls(run, summary, stage)

    def rows(self, seeds: Sequence[int]) -> list[dict]:
        """The stage's `per_seed` rows of `seeds`, in that order."""
        rows = {row["seed"]: row for row in self.summary["per_seed"] if row["stage"] == self.stage}
        missing = [seed for seed in seeds if seed not in rows]
        if missing:
            raise ConfigError(f"{self.run / FILE}: no row of {self.stage} for seed {missing[0]} in per_seed")
        return [rows[seed] for seed in seeds]

    def protocol(self, seeds: Sequence[int]) -> dict:
        """How the stage's evaluations of `seeds` ranked (`PROTOCOL` of their metrics.json); a run whose seeds ranked
        otherwise than one another is an error, and so is an evaluation redone since `seeds.json` was written (its
        means would not be those of the predictions the test reads)."""
        found: dict[tuple, Path] = {}
        for row in self.rows(seeds):
            path = self.run / row["folder"] / "metrics.json"
            metrics = read_json(path)
            if any(metrics.get(m) != row[m] for m in METRICS):
                raise ConfigError(f"{path}: evaluated again since {self.run / FILE} was written; run `align3gr "
                                  f"pipeline --seeds` on {self.run} again to update it")  # fmt: skip
            found.setdefault(tuple(metrics.get(name) for name in PROTOCOL), path)
        if len(found) > 1:
            raise ConfigError(f"{', '.join(map(str, found.values()))}: evaluations of one stage ranked otherwise")
        return dict(zip(PROTOCOL, next(iter(found)), strict=True))

    def user_means(self, seeds: Sequence[int]) -> tuple[list[tuple[str, str]], dict[str, list[float]]]:
        """The evaluated `(user, target)` pairs and, per metric, each user's value averaged over `seeds`."""
        return user_means([self.run / row["folder"] / "predictions.jsonl" for row in self.rows(seeds)])


def user_means(paths: Sequence[Path]) -> tuple[list[tuple[str, str]], dict[str, list[float]]]:
    """The `(user, target)` pairs the evaluations of `paths` (their `predictions.jsonl`, one per seed) ranked, the
    same in each, and per metric each user's value averaged over them."""
    users: list[tuple[str, str]] | None = None
    per_seed = []
    for path in paths:
        predictions = []
        for line, prediction in iter_json_lines(path):
            if not isinstance(prediction, dict) or not {"user_id", "target", "ranked"} <= set(prediction):
                raise ConfigError(f"{path}:{line}: expected an object with user_id, target and ranked")
            predictions.append(prediction)
        pairs = [(p["user_id"], p["target"]) for p in predictions]
        if users is not None and pairs != users:
            raise ConfigError(f"{path}: other users or targets than {paths[0]}")
        users = pairs
        per_seed.append({m: [user_score(m, p["ranked"], p["target"]) for p in predictions] for m in METRICS})
    by_user = {m: zip(*(values[m] for values in per_seed), strict=True) for m in METRICS}
    return users or [], {m: [statistics.fmean(user) for user in by_user[m]] for m in METRICS}


def compare(a: Side, b: Side, test: str = "t", unit: str = "users", alpha: float = 0.05) -> dict:
    """Per metric: each side's mean and sample std over the common seeds, A - B and the paired test by `unit`."""
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r}: expected one of {', '.join(UNITS)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha {alpha}: expected a significance level between 0 and 1, e.g. 0.05")
    if (a.run.resolve(), a.stage) == (b.run.resolve(), b.stage):
        raise ConfigError(f"A and B are the same evaluations ({a.run}, {a.stage}); name another run or --stage-b")
    if a.summary["split"] != b.summary["split"]:
        raise ConfigError(f"{a.run} is evaluated on {a.summary['split']}, {b.run} on {b.summary['split']}")
    seeds = [seed for seed in a.summary["seeds"] if seed in b.summary["seeds"]]
    if len(seeds) < 2:
        raise ConfigError(f"{a.run} and {b.run} share fewer than two seeds ({seeds}); run both with the same --seeds")
    protocol_a, protocol_b = a.protocol(seeds), b.protocol(seeds)
    if protocol_a != protocol_b:
        raise ConfigError(f"{a.run} ranks with {protocol_a}, {b.run} with {protocol_b}: their metrics do not compare")
    rows_a, rows_b = a.rows(seeds), b.rows(seeds)
    users_a, samples_a = a.user_means(seeds)
    users_b, samples_b = b.user_means(seeds)
    if users_a != users_b:
        raise ConfigError(f"{a.run} and {b.run} evaluate other users or targets (another build of the data): their "
                          "metrics are on other test sets, which no paired test compares")  # fmt: skip
    if unit == "seeds":
        samples_a, samples_b = ({m: [row[m] for row in rows] for m in METRICS} for rows in (rows_a, rows_b))
    metrics = []
    for metric in METRICS:
        result = paired_test(samples_a[metric], samples_b[metric], test)
        side_a, side_b = mean_std([row[metric] for row in rows_a]), mean_std([row[metric] for row in rows_b])
        metrics.append({"metric": metric, "a": side_a, "b": side_b, "difference": side_a["mean"] - side_b["mean"],
                        "statistic": result.statistic, "p": result.p_value, "pairs": result.pairs,
                        "significant": result.p_value < alpha})  # fmt: skip
    return {"a": {"run": str(a.run), "stage": a.stage}, "b": {"run": str(b.run), "stage": b.stage}, "seeds": seeds,
            "split": a.summary["split"], "test": test, "unit": unit, "alpha": alpha, "metrics": metrics}  # fmt: skip


def compare_rows(result: dict) -> list[dict]:
    alpha = result["alpha"]
    return [{"metric": row["metric"], "A": plus_minus(row["a"]), "B": plus_minus(row["b"]),
             "A - B": f"{row['difference']:+.4f}", "statistic": row["statistic"], "p": f"{row['p']:.3g}",
             f"p < {alpha:g}": "yes" if row["significant"] else "no"} for row in result["metrics"]]  # fmt: skip


def compare_title(result: dict) -> str:
    a, b, seeds = result["a"], result["b"], ",".join(str(s) for s in result["seeds"])
    pairs = result["metrics"][0]["pairs"]
    unit = "users (each averaged over the seeds)" if result["unit"] == "users" else "seeds"
    return (f"A = {a['run']} {a['stage']}, B = {b['run']} {b['stage']}: mean ± sample std over seeds {seeds} "
            f"({result['split']} split); two-sided {TESTS[result['test']]} over {pairs} {unit}")  # fmt: skip


def compare_text(result: dict) -> str:
    return format_table(compare_rows(result), compare_title(result))


def write_comparison(result: dict, out: Path) -> tuple[Path, Path]:
    """`OUT.json` and `OUT.md`; returns their paths. Files of those names that an earlier comparison did not write
    (`--out runs/a/seeds` would replace the run's `seeds.json`) are refused, before anything is written."""
    paths = out.parent / f"{out.name}.json", out.parent / f"{out.name}.md"
    if any(path.exists() for path in paths) and not _comparison_file(paths[0]):
        raise ConfigError(f"--out {out}: {paths[0].name} or {paths[1].name} exists and is not a comparison's "
                          "(which this one would replace): choose another --out")  # fmt: skip
    make_folders(out.parent)
    atomic_write_json(paths[0], result)
    atomic_write_text(paths[1], markdown_document(compare_rows(result), compare_title(result)))
    return paths


def _comparison_file(path: Path) -> bool:
    """Whether `path` holds an earlier comparison's `OUT.json`."""
    try:
        value = read_json(path)
    except DataError:
        return False
    return isinstance(value, dict) and {"a", "b", "seeds", "test", "unit", "metrics"} <= value.keys()


def default_output(a: Side, b: Side, test: str = "t", unit: str = "users") -> Path:
    """`RUN_A/compare/STAGE_A_vs_NAME-B_STAGE_B_TEST_UNIT` (without suffix), NAME-B run B's folder name followed by a
    digest of its full path when B is another run, so that two B runs of one name, or two tests, do not share a
    file."""
    run_b = b.run.resolve()
    name = run_b.name if run_b == a.run.resolve() else f"{run_b.name}-{sha256_json(str(run_b))[:8]}"
    return a.run / "compare" / f"{a.stage}_vs_{name}_{b.stage}_{test}_{unit}"
