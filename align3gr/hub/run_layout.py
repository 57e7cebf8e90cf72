"""Where a pipeline run keeps what `push`, `load_recommender` and `recommend` read: stage folders, test metrics,
the dataset.

`runs/NAME/sft/` is stage `sft`, `runs/NAME/dpo/STAGE/` any DPO stage; `runs/NAME/eval/test/STAGE/metrics.json` is
the stage's test evaluation; `runs/NAME/data/` is the dataset (its `meta.json` the data statistics) and
`runs/NAME/scid/report.json` describes the SCID tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from align3gr.dpo.config import PROGRESSIVE, STAGES
from align3gr.errors import ConfigError
from align3gr.io import read_json
from align3gr.stage_output import META_FILE

SFT = "sft"
STAGE_ORDER = [SFT, *PROGRESSIVE, *(name for name in STAGES if name not in PROGRESSIVE)]


def stage_folder(run_dir: Path, stage: str) -> Path:
    """The output folder of `stage` in `run_dir`, or a ConfigError listing the stages the run has."""
    folder = run_dir / SFT if stage == SFT else run_dir / "dpo" / stage
    if not (folder / META_FILE).is_file():
        present = ", ".join(stages_present(run_dir)) or "none"
        raise ConfigError(f"--stage {stage!r}: no {folder} with {META_FILE} in this run; stages present: {present}")
    return folder


def ordered(names: list[str]) -> list[str]:
    """Stage names in pipeline order (SFT, the progressive DPO stages, the other variants, then unknown names)."""
    return sorted(names, key=lambda n: (STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER), n))


def last_pipeline_stages(run_dir: Path) -> set[str] | None:
    """The stages and baselines of the run's last `align3gr pipeline` (its `summary.json`), None without one: a
    folder of a stage no longer in the config is left where it was, with another config's model and metrics."""
    summary = run_dir / "summary.json"
    return {row["stage"] for row in read_json(summary).get("stages", [])} if summary.is_file() else None


def stages_present(run_dir: Path) -> list[str]:
    """The finished stages of a run (folders holding a `meta.json`), in pipeline order."""
    found = [SFT] if (run_dir / SFT / META_FILE).is_file() else []
    dpo = run_dir / "dpo"
    if dpo.is_dir():
        found += [p.name for p in dpo.iterdir() if (p / META_FILE).is_file() and not p.name.startswith(".")]
    return ordered(found)


def metrics_by_stage(run_dir: Path) -> dict[str, dict]:
    """`{stage: metrics.json}` of every stage evaluated on the test split (`eval/test/STAGE/`), in pipeline order;
    with a `summary.json`, of the stages of the run's last pipeline only (`last_pipeline_stages`)."""
    folder = run_dir / "eval" / "test"
    if not folder.is_dir():
        return {}
    names = [p.name for p in folder.iterdir() if (p / "metrics.json").is_file() and not p.name.startswith(".")]
    current = last_pipeline_stages(run_dir)
    names = names if current is None else [name for name in names if name in current]
    return {name: read_json(folder / name / "metrics.json") for name in ordered(names)}


def run_of(folder: Path) -> tuple[Path, str] | None:
    """(run folder, stage name) of a stage output folder laid out as in a run (`sft/`, `dpo/STAGE/`), else None."""
    folder = folder.resolve()
    if folder.name == SFT:
        return folder.parent, SFT
    if folder.parent.name == "dpo":
        return folder.parent.parent, folder.name
    return None


def run_data(folder: Path) -> Path | None:
    """The dataset folder (`runs/NAME/data`) of the run a stage folder lies in, None when it lies in none."""
    run = run_of(folder)
    data = run[0] / "data" if run else None
    return data if data is not None and (data / META_FILE).is_file() else None
