"""`align3gr dpo`: the progressive preference stages of Align3GR (Eq. 3, Table 5).

`dpo/STAGE/` holds what `sft/` holds (model or adapter, tokenizer, code tables, `meta.json`, the resolved config,
`training_log.jsonl`) plus `preferences.jsonl` (the stage's rows as item IDs). Each stage starts from the
previous stage's output (the SFT model for the first), which is also its reference (pi_theta^i -> pi_ref^(i+1)).
After each stage the valid split is evaluated into `eval/dpo_STAGE/`, with the options of the `evaluate` section. A
stage whose output records the same fingerprint (its input model's fingerprint, the data, its name, the config and
the valid evaluation's options) is not re-run, so a run stopped between stages resumes at the next one; a stage
killed midway resumes from its last checkpoint in `STAGE.work/`.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import align3gr
from align3gr.config import config_to_dict, fingerprint_options
from align3gr.console import format_table
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.devices import numerics
from align3gr.dpo.arguments import dpo_arguments, load_policy
from align3gr.dpo.buckets import BucketRule, Buckets, PrefixBuckets, SimilarityBuckets, scid_vectors
from align3gr.dpo.config import STAGES, DPOStageConfig
from align3gr.dpo.preferences import (
    NO_FEEDBACK,
    PreferenceExample,
    has_feedback_levels,
    real_feedback_examples,
    real_feedback_prompts,
    self_play_examples,
    training_positives,
)
from align3gr.dpo.self_play import generate_candidates
from align3gr.dpo.shared_prompt import check_packed
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.evaluate.stage import run_evaluate
from align3gr.io import read_json, sha256_json
from align3gr.metrics import METRICS_FILE, ranking_metrics
from align3gr.models.loading import ADAPTER_CONFIG
from align3gr.models.lora import save_trained_rows_only
from align3gr.models.zero3 import check_adapter_partitioning, whole_weights
from align3gr.scid.code_tables import CODE_TABLES, ITEM_CODES, code_length, load_code_tables
from align3gr.sft.tasks import TaskBuilder, trained_prompting
from align3gr.stage_output import LOGS, META_FILE, NOT_A_MODEL, NOT_AN_EVALUATION, StageOutput, check_apart
from align3gr.training import FINAL, TRAINING_LOG, LogsLastStep, logged, publish_model, republish_model
from align3gr.training_curves import CURVES_FILE

log = logging.getLogger(__name__)

CONFIG_FILE = "dpo_config.yaml"
STAGE_CONFIG = "*_config.yaml"
"""The resolved config a training stage publishes beside its model (`sft_config.yaml`, `dpo_config.yaml`)."""
PREFERENCES_FILE = "preferences.jsonl"
VALID_EVALUATION = "valid_evaluation"
"""The meta key beside `valid_metrics`: the hash of the evaluation options that measured them, which a guard
comparing them with its own stage's checks."""
STAGE_FILES = {META_FILE, CONFIG_FILE, PREFERENCES_FILE, TRAINING_LOG, CURVES_FILE, LOGS, *CODE_TABLES}
"""What a stage writes beside the saved model (its TensorBoard logs in `LOGS`); the guard replaces every other file of
its folder."""


@dataclass
class StageResult:
    """One stage: its output folder, meta, valid metrics and whether it was already up to date."""

    name: str
    path: Path
    meta: dict
    valid_metrics: dict
    up_to_date: bool

    def row(self, ks: list[int]) -> dict:
        """The stage's row of the printed table: its preference rows, training, the guard's choice, valid metrics."""
        data = self.meta["preference_data"]
        row = {"stage": self.name, "rows": data["rows"], "rejected/row": data["rejected_per_row"]}
        row["trained"] = "reused" if self.up_to_date else f"{self.meta['seconds']:.0f}s"
        if "guard" in self.meta:
            row["kept"] = self.meta["guard"]["kept"]
        return row | ranking_metrics(self.valid_metrics, ks)


@dataclass
class DPOResult(Sequence[StageResult]):
    """The stages run in order under `path`, their valid metrics cut off at `ks`, and whether this process is the
    main one (which prints them)."""

    path: Path
    stages: list[StageResult]
    ks: list[int]
    main_process: bool = True

    def __getitem__(self, index: int) -> StageResult:
        return self.stages[index]

    def __len__(self) -> int:
        return len(self.stages)

    def render(self) -> str:
        """The table `align3gr dpo` prints (nothing on the other processes)."""
        if not self.main_process:
            return ""
        rows = [stage.row(self.ks) for stage in self.stages]
        return "\n" + format_table(rows, f"Progressive DPO {self.path} (valid split after each stage)")


def stage_fingerprint(
    previous: Path, dataset: Dataset, name: str, config: DPOStageConfig, evaluation: EvaluateConfig
) -> str:
    """What a stage's output depends on: the model it starts from (its own fingerprint), the data, its name, the
    options (not the list of stages: adding a stage after it leaves it as it is) and those of its valid evaluation
    (its metrics, and with the guard the model handed on), as the pipeline's step keys record them
    (`fingerprint_options`: where model code may load from is not among them)."""
    options = {k: v for k, v in fingerprint_options(config).items() if k != "stages"}
    return sha256_json(
        {
            "start": read_json(previous / META_FILE).get("fingerprint"),
            "data": dataset.meta.get("fingerprint"),
            "stage": name,
            "config": options,
            "evaluation": fingerprint_options(evaluation),
            "version": align3gr.__version__,
        }
    )


def training_prompts(dataset: Dataset, per_user: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(user, history, next item) of each user's `per_user` most recent training examples."""
    by_user: dict[str, list] = {}
    for ex in dataset.examples("train"):
        by_user.setdefault(ex.user_id, []).append((ex.user_id, ex.history, ex.target))
    return [row for rows in by_user.values() for row in rows[-per_user:]]


def render_rows(examples: list[PreferenceExample], builder: TaskBuilder, tokenizer, seed: int) -> list[dict]:
    """`prompt_ids` / `chosen_ids` / `rejected_ids` of the sequential task (A) in the form the model was trained
    on, a paraphrase drawn per row with `seed`."""
    rng = random.Random(f"{seed}:dpo")
    rows = []
    for ex in examples:
        template = rng.choice(builder.templates[builder.seq_kind])
        rows.append(
            {
                "prompt_ids": builder.seq_prompt_ids(tokenizer, ex.user_id, ex.history, template),
                "chosen_ids": builder.seq_answer_ids(tokenizer, ex.chosen),
                "rejected_ids": [builder.seq_answer_ids(tokenizer, r) for r in ex.rejected],
            }
        )
    return rows


def stage_examples(
    name: str, policy, tokenizer, builder: TaskBuilder, config: DPOStageConfig
) -> tuple[list[PreferenceExample], dict]:
    """The rows of stage `name` from the candidates `policy` generates: self-play buckets them against the ground
    truth, real feedback keeps those the user logged at the stage's level."""
    source, kind = STAGES[name]
    dataset, item_codes = builder.dataset, builder.item_codes
    if source == "real_feedback":
        feedback_prompts = real_feedback_prompts(dataset, config.prompts_per_user)
        generated = generate_candidates(
            policy, tokenizer, builder, item_codes, feedback_prompts, config.candidates, config.generation_batch_size
        )
        examples, stats = real_feedback_examples(
            dataset, feedback_prompts, generated, kind, config.num_rejected, config.rf_fill
        )
        return examples, stats.as_dict()
    prompts = training_prompts(dataset, config.prompts_per_user)
    generated = generate_candidates(
        policy, tokenizer, builder, item_codes, prompts, config.candidates, config.generation_batch_size
    )
    buckets = stage_buckets(policy, tokenizer, item_codes, config)
    examples, stats = self_play_examples(
        prompts, generated, buckets, kind, config.num_rejected, config.seed, config.sp_fill, training_positives(dataset)
    )
    return examples, stats.as_dict()


def stage_buckets(policy, tokenizer, item_codes, config: DPOStageConfig) -> Buckets:
    """The difficulty of self-play candidates: prefix-ngram match, or the similarity of the policy's SCID vectors."""
    if config.bucketing == "similarity":
        items, vectors = scid_vectors(policy, tokenizer, item_codes)
        return SimilarityBuckets(
            items, vectors, config.medium_share, config.hard_share, config.similarity_sample, config.seed
        )
    rule = BucketRule(code_length(item_codes), config.medium_min, config.hard_min)
    return PrefixBuckets(item_codes, rule)


def run_stage(
    name: str,
    previous: Path,
    data_dir: Path,
    out: Path,
    eval_dir: Path,
    config: DPOStageConfig,
    evaluation: EvaluateConfig,
) -> StageResult:
    """Train stage `name` from the model in `previous` into `out` (or reuse it), then evaluate the valid split with
    `evaluation` (`config.valid_evaluation` of the evaluate options)."""
    from accelerate import PartialState

    start = time.perf_counter()
    output = StageOutput(out, distributed=True, holds=META_FILE, lacks=NOT_A_MODEL)
    arguments = dpo_arguments(config, output.work)  # sets up the process group first
    check_adapter_partitioning((previous / ADAPTER_CONFIG).is_file(), f"DPO stage {name} (its start is an adapter)")
    state = PartialState()
    dataset = load_dataset(data_dir)
    item_codes, user_codes = load_code_tables(previous, dataset)
    fingerprint = stage_fingerprint(previous, dataset, name, config, evaluation)
    if output.current(fingerprint) is not None:
        log.info("DPO stage %s is up to date; nothing to train", name)
        meta = validated(name, previous, out, data_dir, eval_dir, config, evaluation)
        return StageResult(name, out, meta, meta["valid_metrics"], True)
    resume = output.resume(fingerprint)
    if republish_model(output, previous, CONFIG_FILE, config) is not None:
        log.info("DPO stage %s: the model trained by a run stopped while publishing it is now published", name)
        meta = validated(name, previous, out, data_dir, eval_dir, config, evaluation)
        return StageResult(name, out, meta, meta["valid_metrics"], False)
    previous_meta = read_json(previous / META_FILE)
    with_user_scid, seq_format = trained_prompting(previous)
    builder = TaskBuilder(
        dataset, item_codes, user_codes, with_user_scid=with_user_scid, seed=config.seed, seq_format=seq_format
    )
    policy, tokenizer = load_policy(previous, config.shared_prompt_forward, config.trust_remote_code)
    if config.shared_prompt_forward == "packed":
        check_packed(policy)  # before the self-play generation, not at the first training step
    with whole_weights(policy):
        examples, stats = stage_examples(name, policy, tokenizer, builder, config)
    if examples:
        log.info("DPO stage %s: %d rows (%s)", name, len(examples), stats)
        history, steps = train_stage(policy, tokenizer, examples, builder, arguments, config, resume, output.work)
    else:
        log.warning("DPO stage %s: no preference rows (%s): it trains nothing and hands on its start model", name,
                    stats)  # fmt: skip
        if output.main_process:
            copy_into(model_files(previous), output.work / FINAL)
        state.wait_for_everyone()
        history, steps = [], 0
    del policy  # the valid check below loads the published model on its own
    free_accelerator_memory()
    meta = {
        "fingerprint": fingerprint,
        "stage": name,
        "start": str(previous),
        "base_model": previous_meta.get("base_model"),
        "adapter": previous_meta.get("adapter", False),
        "vocabulary": previous_meta.get("vocabulary"),
        "preference_data": stats,
        **({} if examples else {"handed_on": "no preference rows"}),
        "steps": steps,
        "train_loss": {"start": logged(history, "loss", 0), "end": logged(history, "loss", -1)},
        "reward_accuracy": {
            "start": logged(history, "rewards/accuracies", 0),
            "end": logged(history, "rewards/accuracies", -1),
        },
        "config": {**previous_meta.get("config", {}), "dpo": config_to_dict(config)},
        "align3gr_version": align3gr.__version__,
        "numerics": numerics(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    rows = (
        {"user_id": e.user_id, "history": list(e.history), "chosen": e.chosen, "rejected": e.rejected} for e in examples
    )
    publish_model(output, previous, CONFIG_FILE, config, history, meta, {PREFERENCES_FILE: rows})
    meta = validated(name, previous, out, data_dir, eval_dir, config, evaluation)
    return StageResult(name, out, meta, meta["valid_metrics"], False)


def free_accelerator_memory() -> None:
    """Return the GPU memory of the models and trainer a stage has let go of (reference cycles included) before the
    next model is loaded beside them."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_stage(policy, tokenizer, examples, builder, arguments, config, resume, work: Path) -> tuple[list[dict], int]:
    """Train `policy` on the rows of `examples` (Softmax-DPO, Align3GR Eq. 3) and save it into `work/FINAL`; the
    trainer's log history and its number of steps."""
    from accelerate import PartialState
    from datasets import Dataset as HFDataset

    from align3gr.dpo.trainer import SoftmaxDPOTrainer

    trainer = SoftmaxDPOTrainer(
        model=policy,
        args=arguments,
        train_dataset=HFDataset.from_list(render_rows(examples, builder, tokenizer, config.seed)),
        processing_class=tokenizer,
        callbacks=[LogsLastStep()],
    )
    save_trained_rows_only(trainer.model)
    trainer.train(resume_from_checkpoint=resume)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        unwrapped.delete_adapter("ref")
    trainer.save_model(str(work / FINAL))
    PartialState().wait_for_everyone()
    return trainer.state.log_history, trainer.state.global_step


def validated(
    name: str,
    previous: Path,
    out: Path,
    data_dir: Path,
    eval_dir: Path,
    config: DPOStageConfig,
    evaluation: EvaluateConfig,
) -> dict:
    """The stage's meta with its valid-split metrics (evaluated into `eval/dpo_STAGE/` when the meta has none yet)
    and, with `guard` on, the guard's decision: a run stopped between training, evaluation and the guard finishes
    them on its next start. The start model's metrics are its meta's when they were measured by the same evaluation
    of the same data (`VALID_EVALUATION`, a hash of the options, the dataset's fingerprint and align3gr's version),
    else evaluated into `eval/dpo_STAGE_start/`."""
    meta = read_json(out / META_FILE)
    data = read_json(data_dir / "meta.json").get("fingerprint")
    protocol = sha256_json({"evaluate": config_to_dict(evaluation), "data": data, "version": align3gr.__version__})
    if "valid_metrics" not in meta:
        meta["valid_metrics"] = valid_metrics(out, data_dir, valid_folder(eval_dir, name), evaluation)
        meta[VALID_EVALUATION] = protocol
        StageOutput(out, distributed=True).write_meta(meta)
    if config.guard and "guard" not in meta and "handed_on" not in meta:  # a stage that trained nothing is its start
        measured = read_json(previous / META_FILE)
        start = measured.get("valid_metrics") if measured.get(VALID_EVALUATION) == protocol else None
        if start is None:
            start = valid_metrics(previous, data_dir, valid_folder(eval_dir, f"{name}_start"), evaluation)
        meta = guarded(previous, out, meta, start, config.guard_metrics)
    return meta


def valid_metrics(model_dir: Path, data_dir: Path, out: Path, evaluation: EvaluateConfig) -> dict:
    """Recall and NDCG on the valid split (and the valid rate) of the model in `model_dir` by `evaluation`, written to
    `out`."""
    metrics = run_evaluate(model_dir, data_dir, out, evaluation).metrics
    return {k: v for k, v in metrics.items() if "@" in k or k == "valid_rate"}


def guarded(previous: Path, out: Path, meta: dict, start: dict, metrics: list[str]) -> dict:
    """Keep the trained model of `out` when none of `metrics` falls below `start` (the valid metrics of the model in
    `previous`); otherwise put `previous`'s model files in their place, in one rename, so the next stage and every
    reader of `out` get the start model. `meta["guard"]` records the decision and both evaluations."""
    fallen = [m for m in metrics if meta["valid_metrics"][m] < start[m]]
    meta["guard"] = {
        "kept": "start" if fallen else "trained",
        "fallen": fallen,
        "trained_valid_metrics": meta["valid_metrics"],
        "start_valid_metrics": start,
    }
    if fallen:
        meta["valid_metrics"] = start
        log.info("guard: %s lowers valid %s; the stage hands on its start model", out.name, ", ".join(fallen))
    output = StageOutput(out, distributed=True, holds=META_FILE, lacks=NOT_A_MODEL)
    if fallen:
        output.publish(lambda folder: copy_start_model(previous, out, folder), meta)
    else:
        output.write_meta(meta)
    return meta


def valid_folder(eval_dir: Path, name: str) -> Path:
    """Where the valid evaluation of stage `name` (`STAGE`, or `STAGE_start` for its start model) goes."""
    return eval_dir / f"dpo_{name}"


def copy_start_model(previous: Path, out: Path, folder: Path) -> None:
    """Copy into `folder` every model file of `previous` (`model_files`: its own shards, whatever those of `out`),
    then the stage files (and logs) of `out`."""
    copy_into([*model_files(previous), *(path for path in out.iterdir() if path.name in STAGE_FILES)], folder)


def copy_into(sources: list[Path], folder: Path) -> None:
    """Copy each file or folder of `sources` into `folder` (made if need be), under its own name."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source.is_dir():
            shutil.copytree(source, folder / source.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, folder / source.name)


def model_files(folder: Path) -> list[Path]:
    """The saved model's files in a stage output (`sft/` or a DPO stage): all but what publishing adds, the stage
    files and the resolved config (`STAGE_CONFIG`)."""
    return [path for path in folder.iterdir() if path.name not in STAGE_FILES and not path.match(STAGE_CONFIG)]


def run_dpo(
    data_dir: str | Path,
    start_dir: str | Path,
    out_dir: str | Path,
    config: DPOStageConfig | None = None,
    eval_dir: str | Path | None = None,
    evaluate: EvaluateConfig | None = None,
) -> DPOResult:
    """Run `config.stages` in order from the model in `start_dir` (an `sft/` folder), each into `out_dir/STAGE`,
    each the reference of the next; valid metrics by the `evaluate` options (default: the evaluate stage's) into
    `eval_dir` (default: `eval/` beside `out_dir`)."""
    from accelerate import PartialState

    config = config or DPOStageConfig()
    config.validate()
    evaluation = config.valid_evaluation(evaluate or EvaluateConfig())
    out, previous = Path(out_dir), Path(start_dir)
    evaluations = Path(eval_dir) if eval_dir is not None else out.parent / "eval"
    if not (previous / META_FILE).is_file():
        raise ConfigError(f"{previous}: not an sft/ or DPO stage output (no {META_FILE}); run `align3gr sft` first")
    for name in config.stages:  # every stage's folders, before the first one trains
        check_apart(out / name, {"--data": data_dir, "--start": previous})
        StageOutput(out / name, holds=META_FILE, lacks=NOT_A_MODEL)
        StageOutput(valid_folder(evaluations, name), holds=METRICS_FILE, lacks=NOT_AN_EVALUATION)
        StageOutput(valid_folder(evaluations, f"{name}_start"), holds=METRICS_FILE, lacks=NOT_AN_EVALUATION)
    item_codes, _ = load_code_tables(previous)  # every stage's SCIDs: each stage publishes its start's tables
    config.check_code_length(code_length(item_codes), str(previous / ITEM_CODES))
    feedback = [name for name in config.stages if STAGES[name][0] == "real_feedback"]
    if feedback and not has_feedback_levels(load_dataset(data_dir)):
        raise ConfigError(f"stages {', '.join(feedback)}: {NO_FEEDBACK} in {data_dir}; leave them out of the stages")
    results = []
    for name in config.stages:
        results.append(run_stage(name, previous, Path(data_dir), out / name, evaluations, config, evaluation))
        previous = out / name
    return DPOResult(out, results, evaluation.ks, PartialState().is_main_process)
