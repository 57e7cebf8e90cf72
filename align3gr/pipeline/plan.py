"""The stages of one Align3GR run as a list of steps: data -> embed -> tokenize -> sft -> evaluate -> each DPO stage
-> evaluate, each step with its output folder, the steps it reads, the options it depends on and how to run it.

Layout under the run folder: `data/`, `embeddings/`, `scid/`, `sft/` (and `sft_base/` for the tiny model),
`dpo/STAGE/`, `eval/SPLIT/STAGE/` (the pipeline's evaluations, SPLIT from the evaluate section: test by default;
`eval/dpo_STAGE/` holds DPO's own valid-split checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align3gr.config import config_to_dict
from align3gr.pipeline.config import PipelineConfig

SFT = "sft"


@dataclass
class Step:
    """One stage invocation. `model` names the model a training or evaluation step is about (`sft` or a DPO
    stage); `always` steps check their own inputs (the data build hashes the raw files) and are always called."""

    name: str
    kind: str
    path: Path
    inputs: tuple[str, ...]
    options: dict[str, Any]
    run: Callable[[], object]
    model: str | None = None
    always: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def data_steps(config: PipelineConfig, run_dir: Path) -> list[Step]:
    """data, embed, tokenize: what every model of the run (and every ablation step) shares or varies."""
    from align3gr.data.build import build_dataset
    from align3gr.embed.stage import run_embed
    from align3gr.tokenize.stage import run_tokenize

    data, embeddings, scid = run_dir / "data", run_dir / "embeddings", run_dir / "scid"
    source = config.source
    return [
        Step("data", "data", data, (), {"source": config_to_dict(source), "data": config_to_dict(config.data)},
             lambda: build_dataset(source.builder, source.source, data, config.data, source.options, overwrite=True),
             always=True),
        Step("embed", "embed", embeddings, ("data",), config_to_dict(config.embed),
             lambda: run_embed(data, embeddings, config.embed)),
        Step("tokenize", "tokenize", scid, ("data", "embed"), config_to_dict(config.tokenize),
             lambda: run_tokenize(data, embeddings, scid, config.tokenize)),
    ]  # fmt: skip


def sft_step(config: PipelineConfig, run_dir: Path, scid_step: Step, out: Path, name: str = SFT) -> Step:
    """SFT on the data and the code tables of `scid_step`, into `out`."""
    from align3gr.sft.stage import run_sft

    data = run_dir / "data"
    return Step(name, "sft", out, ("data", scid_step.name), config_to_dict(config.sft),
                lambda: run_sft(data, scid_step.path, out, config.sft), model=SFT)  # fmt: skip


def dpo_steps(config: PipelineConfig, run_dir: Path, start: Step, out: Path, prefix: str = "") -> list[Step]:
    """One step per DPO stage of the config, each from the model of the step before (the first from `start`)."""
    from align3gr.dpo.stage import run_stage

    data, options = run_dir / "data", {k: v for k, v in config_to_dict(config.dpo).items() if k != "stages"}
    steps, previous = [], start
    for stage in config.dpo.stages:
        path, before = out / stage, previous.path
        step = Step(f"{prefix}dpo:{stage}", "dpo", path, ("data", previous.name), {**options, "stage": stage},
                    lambda stage=stage, path=path, before=before: run_stage(
                        stage, before, data, path, run_dir / "eval", config.dpo),
                    model=stage)  # fmt: skip
        steps.append(step)
        previous = step
    return steps


def evaluation_step(config: PipelineConfig, run_dir: Path, model_step: Step, out: Path) -> Step:
    """The evaluation of `model_step`'s model on the evaluate section's split, into `out`."""
    from align3gr.evaluate.stage import run_evaluate

    data = run_dir / "data"
    return Step(f"eval:{model_step.name}", "evaluate", out, ("data", model_step.name),
                config_to_dict(config.evaluate), lambda: run_evaluate(model_step.path, data, out, config.evaluate),
                model=model_step.model, extra={"evaluates": model_step.name})  # fmt: skip


def pipeline_steps(config: PipelineConfig, run_dir: Path) -> list[Step]:
    """The whole run, in order: every model (SFT, then each DPO stage) followed by its evaluation."""
    steps = data_steps(config, run_dir)
    sft = sft_step(config, run_dir, steps[-1], run_dir / SFT)
    evaluations = run_dir / "eval" / config.evaluate.split
    steps += [sft, evaluation_step(config, run_dir, sft, evaluations / SFT)]
    for stage in dpo_steps(config, run_dir, sft, run_dir / "dpo"):
        steps += [stage, evaluation_step(config, run_dir, stage, evaluations / stage.model)]
    return steps
