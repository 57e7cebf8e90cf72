"""Where the steps of runs that share work with the main run go: the repeated seeds (`pipeline --seeds`) and the
ablation ladder's rungs (`ablate`, over one seed or several).

A step whose lineage is the main run's lives in the main run's folder; one whose lineage is seed S's own pipeline in
`seeds/S/` (so `pipeline --seeds` and `ablate --seeds` on one run folder share it); any other in `ablation/HASH/`, a
folder per lineage that rungs share.
"""

from __future__ import annotations

from pathlib import Path

from align3gr.pipeline.config import PipelineConfig
from align3gr.pipeline.plan import Placement, Plan, lineage_key, pipeline_steps

SEEDED = ("embed", "tokenize", "sft", "dpo")
"""The sections whose `seed` a run seed shifts; `data` is not one (the dataset stays fixed)."""


def seeded_config(config: PipelineConfig, seed: int) -> PipelineConfig:
    """`config` with `seed` added to the seed of each `SEEDED` section (seed 0: `config` itself)."""
    for section in SEEDED:
        config = config.replace(section, seed=getattr(config, section).seed + seed)
    return config


def seed_folder(run_dir: Path, seed: int) -> Path:
    """Where a seed's own steps and config go: the run folder for seed 0, `seeds/S/` for the others."""
    return run_dir if seed == 0 else run_dir / "seeds" / str(seed)


def pipeline_lineages(config: PipelineConfig, run_dir: Path) -> dict[str, str]:
    """Output folder relative to the run folder -> lineage key, for each step of `config`'s own pipeline."""
    lineages: dict[str, str] = {}

    def record(relative: str, lineage: dict) -> Path:
        lineages[relative] = lineage_key(lineage)
        return run_dir / relative

    pipeline_steps(Plan(config, run_dir / "config.yaml", run_dir, record))
    return lineages


def shared_placement(config: PipelineConfig, run_dir: Path, seed: int = 0) -> Placement:
    """The main run's folders for the lineages of `config`'s own pipeline; `seeds/S/` for those of seed `seed`'s
    pipeline; `ablation/HASH/` for any other lineage."""
    owners = [(run_dir, pipeline_lineages(config, run_dir))]
    if seed:
        owners.append((seed_folder(run_dir, seed), pipeline_lineages(seeded_config(config, seed), run_dir)))

    def place(relative: str, lineage: dict) -> Path:
        key = lineage_key(lineage)
        for folder, lineages in owners:
            if lineages.get(relative) == key:
                return folder / relative
        return run_dir / "ablation" / key / relative

    return place
