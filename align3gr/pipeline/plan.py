"""The stages of one Align3GR run as a list of steps: data -> embed -> tokenize -> the baselines -> sft -> evaluate ->
each DPO stage -> evaluate, each step with its output folder, the steps it reads, the options it depends on
(`fingerprint_options`: not the `device` of embed and tokenize, which choose where a stage computes) and how to run
it.

Layout under the run folder: `data/`, `embeddings/`, `scid/`, `sft/` (and `sft_base/` for the tiny model),
`dpo/STAGE/`, `eval/SPLIT/STAGE/` (the pipeline's evaluations, SPLIT from the evaluate section: test by default;
`eval/dpo_STAGE/` holds DPO's own valid-split checks), `eval/SPLIT/popular/` and `eval/SPLIT/sasrec/` (the
baselines, evaluated with the same options). A step's *lineage* is every option that shaped its output
(its own section and those of the steps before it); a `Placement` maps a lineage to a folder, which is how the
ablation ladder and the repeated seeds put the steps they share with the main run in the main run's folders (and
those of seed S's own pipeline in `seeds/S/`) and the others beside them (`align3gr.pipeline.placement`).

Training and evaluation steps also carry their stage command (`align3gr sft --config ... --out ...`), which a
launcher (`accelerate launch ...`) runs on several processes instead of the in-process call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from align3gr.config import fingerprint_options
from align3gr.io import sha256_json
from align3gr.models.local import local_models
from align3gr.pipeline.config import SECTIONS, PipelineConfig
from align3gr.prompts import prompt_digest
from align3gr.sft.tasks import PROMPT_FILE as SFT_PROMPTS
from align3gr.tokenize.unisid.summaries import PROMPT_FILE as UNISID_PROMPTS

SFT = "sft"
SCORED = ("evaluate", "baseline")
"""The kinds of step that write `metrics.json`."""
Placement = Callable[[str, dict], Path]
"""(path relative to the run folder, lineage) -> the step's output folder."""


@dataclass
class Step:
    """One stage invocation. `name` is its output folder relative to the run folder (unique in a run); `label` is
    what tables call it; `model` names the model a training or evaluation step is about (`sft` or a DPO stage);
    `command` is the stage's CLI arguments for a launcher; `always` steps check their own inputs (the data build
    hashes the raw files) and are always called."""

    name: str
    label: str
    kind: str
    path: Path
    inputs: tuple[str, ...]
    options: dict[str, Any]
    run: Callable[[], object]
    lineage: dict[str, Any]
    model: str | None = None
    evaluates: str | None = None
    command: list[str] | None = None
    always: bool = False


@dataclass(frozen=True)
class Plan:
    """What steps are built from: the config, the YAML file holding it (for stage commands), the run folder, and
    where each lineage's outputs go."""

    config: PipelineConfig
    config_file: Path
    run_dir: Path
    place: Placement

    def step(self, relative: str, lineage: dict, **fields: Any) -> Step:
        path = self.place(relative, lineage)
        return Step(name=path.relative_to(self.run_dir).as_posix(), path=path, lineage=lineage, **fields)

    def command(self, stage: str, **paths: Path | str) -> list[str]:
        """`align3gr STAGE --config FILE --key value ...` arguments."""
        arguments = [stage, "--config", str(self.config_file)]
        for key, value in paths.items():
            arguments += [f"--{key.replace('_', '-')}", str(value)]
        return arguments


def in_run(run_dir: Path) -> Placement:
    """Every step in its usual folder of `run_dir`."""
    return lambda relative, lineage: run_dir / relative


def data_steps(plan: Plan) -> list[Step]:
    """data, embed, tokenize."""
    from align3gr.data.build import build_dataset
    from align3gr.embed.stage import FILES_VERSION, run_embed
    from align3gr.tokenize.stage import run_tokenize

    config = plan.config
    sections = {name: fingerprint_options(getattr(config, name)) for name in SECTIONS}
    source = config.source
    lineage = {"source": sections["source"], "data": sections["data"]}
    data = plan.step("data", lineage, label="data", kind="data", inputs=(), options=lineage, always=True,
                     run=lambda: build_dataset(source.builder, source.source, data.path, config.data, source.options,
                                               overwrite=True))  # fmt: skip
    lineage = {**lineage, "embed": sections["embed"]}
    encoder = local_models(config.embed.semantic_model)
    embed = plan.step("embeddings", lineage, label="embed", kind="embed", inputs=(data.name,),
                      options={**sections["embed"], "files": FILES_VERSION, **encoder},
                      run=lambda: run_embed(data.path, embed.path, config.embed))  # fmt: skip
    lineage = {**lineage, "tokenize": sections["tokenize"]}
    unisid = config.unisid()
    unisid_models = (unisid.model, unisid.reconstruction_model, unisid.summary_model) if unisid else ()
    templates = {"templates": prompt_digest(UNISID_PROMPTS)} if unisid else {}
    scid = plan.step("scid", lineage, label="tokenize", kind="tokenize", inputs=(data.name, embed.name),
                     options={**sections["tokenize"], **local_models(*unisid_models), **templates},
                     run=lambda: run_tokenize(data.path, embed.path, scid.path, config.tokenize))  # fmt: skip
    return [data, embed, scid]


def baseline_steps(plan: Plan, data: Step, embed: Step) -> list[Step]:
    """The most-popular list (from the data) and the collaborative encoder (from the embeddings), evaluated with the
    evaluate section's options, in the main run's folders whatever the rung (their lineage is the data's or the
    embeddings')."""
    from align3gr.baselines.stage import POPULAR, SEQUENTIAL, run_baseline

    config = plan.config.evaluate
    steps = []
    for name, source in ((POPULAR, data), (SEQUENTIAL, embed)):
        step = plan.step(f"eval/{config.split}/{name}", source.lineage, label=name, kind="baseline",
                         inputs=tuple(dict.fromkeys((data.name, source.name))),
                         options={**fingerprint_options(config), "baseline": name}, run=lambda: None)  # fmt: skip
        step.run = lambda step=step, name=name: run_baseline(name, data.path, step.path, config, embed.path)
        steps.append(step)
    return steps


def sft_step(plan: Plan, data: Step, scid: Step) -> Step:
    """SFT on the data and the code tables of `scid`."""
    from align3gr.sft.stage import run_sft

    options = {**fingerprint_options(plan.config.sft), **local_models(plan.config.sft.model)}
    step = plan.step(
        SFT,
        {**scid.lineage, "sft": options},
        label=SFT,
        kind="sft",
        inputs=(data.name, scid.name),
        options={**options, "templates": prompt_digest(SFT_PROMPTS)},
        model=SFT,
        run=lambda: run_sft(data.path, scid.path, step.path, plan.config.sft),
    )
    step.command = plan.command("sft", data=data.path, scid=scid.path, out=step.path)
    return step  # fmt: skip


def dpo_steps(plan: Plan, data: Step, start: Step) -> list[Step]:
    """One step per DPO stage of the config, each from the model of the step before (the first from `start`); a
    stage's valid-split check, with the evaluate section's options, goes to `eval/` beside its `dpo/` folder."""
    from align3gr.dpo.stage import run_stage

    config = plan.config.dpo
    evaluation = config.valid_evaluation(plan.config.evaluate)
    options = {k: v for k, v in fingerprint_options(config).items() if k != "stages"}
    steps, previous = [], start
    for index, stage in enumerate(config.stages):
        lineage = {**start.lineage, "dpo": options, "dpo_stages": config.stages[: index + 1]}
        step = plan.step(
            f"dpo/{stage}",
            lineage,
            label=stage,
            kind="dpo",
            model=stage,
            inputs=(data.name, previous.name),
            options={
                **options,
                "stage": stage,
                "evaluation": fingerprint_options(evaluation),
                "templates": prompt_digest(SFT_PROMPTS),
            },
            run=lambda: None,
        )
        checks = step.path.parent.parent / "eval"
        step.run = lambda step=step, before=previous.path, checks=checks: run_stage(
            step.model, before, data.path, step.path, checks, config, evaluation
        )
        step.command = plan.command(
            "dpo", data=data.path, start=previous.path, out=step.path.parent, eval_dir=checks, stages=stage
        )
        steps.append(step)
        previous = step
    return steps  # fmt: skip


def evaluation_step(plan: Plan, data: Step, model: Step) -> Step:
    """The evaluation of `model`'s output on the evaluate section's split, placed by the model's lineage (so an
    ablation model's evaluation sits beside it; the options are in the step's key)."""
    from align3gr.evaluate.stage import run_evaluate

    config = plan.config.evaluate
    step = plan.step(
        f"eval/{config.split}/{model.model}",
        model.lineage,
        label=f"eval {model.label}",
        kind="evaluate",
        inputs=(data.name, model.name),
        options={**fingerprint_options(config), "templates": prompt_digest(SFT_PROMPTS)},
        model=model.model,
        evaluates=model.name,
        run=lambda: run_evaluate(model.path, data.path, step.path, config),
    )
    step.command = plan.command("evaluate", model=model.path, data=data.path, out=step.path)
    return step  # fmt: skip


def pipeline_steps(plan: Plan, dpo: bool = True) -> list[Step]:
    """The whole run, in order: the data steps, the baselines, then every model (SFT, then each DPO stage unless `dpo`
    is off) followed by its evaluation."""
    steps = data_steps(plan)
    data, embed, scid = steps
    steps += baseline_steps(plan, data, embed)
    models = [sft_step(plan, data, scid)]
    if dpo:
        models += dpo_steps(plan, data, models[0])
    for model in models:
        steps += [model, evaluation_step(plan, data, model)]
    return steps


def merged_steps(plans: list[tuple[Plan, bool]]) -> tuple[list[Step], list[list[Step]]]:
    """The pipelines of several plans (each with its DPO stages or without) as one list holding every step once, in
    an order that respects inputs (a step two plans place in one folder runs once); and each plan's own steps."""
    steps: dict[str, Step] = {}
    own = [[steps.setdefault(step.name, step) for step in pipeline_steps(plan, dpo=dpo)] for plan, dpo in plans]
    return list(steps.values()), own


@cache
def section_defaults(section: str) -> dict[str, Any]:
    """The default options of one config section."""
    return fingerprint_options(SECTIONS[section]())


def lineage_key(lineage: dict) -> str:
    """A short hash naming a lineage's folder, of the options that differ from their section's defaults: a release
    that adds an option (at a default keeping the old behaviour) keeps the folders of earlier runs; whether a
    folder's content is current stays each stage's own fingerprint's call."""
    explicit = {
        name: {k: v for k, v in value.items() if section_defaults(name).get(k, MISSING) != v}
        if name in SECTIONS
        else value
        for name, value in lineage.items()
    }
    return sha256_json(explicit)[:12]
