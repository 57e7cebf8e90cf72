"""What every training stage (SFT, each DPO stage) shares: the TRL arguments that depend on the hardware, and the
publication of the trained model with its code tables, config, training log and curves.

Without CUDA, several processes of an `accelerate launch` (DDP or DeepSpeed) talk over gloo and train in float32
(bf16 off); FSDP needs GPUs. With CUDA, bf16 is on where the GPU computes in it natively unless the config says
otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback
from transformers.trainer_utils import IntervalStrategy

from align3gr.config import config_to_dict
from align3gr.errors import ConfigError
from align3gr.io import atomic_write_json, fsync_tree, iter_json_lines, read_json, write_jsonl
from align3gr.options import TrainingOptions
from align3gr.scid.code_tables import CODE_TABLES
from align3gr.stage_output import META_FILE, StageOutput
from align3gr.training_args import REPORT_TO
from align3gr.training_curves import CURVES_FILE, plot_training_curves

TRAINING_LOG = "training_log.jsonl"
FINAL = "final"
"""The work folder's folder of the trained model: saved there by the stage, made whole and published by
`publish_model`."""


def cpu_processes() -> bool:
    """Whether training runs on CPU processes outside DeepSpeed: then Transformers must be told (`use_cpu`), or an
    `accelerate launch --multi_gpu` on a machine without accelerators would train each process alone, unsynchronised."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return not torch.accelerator.is_available() and not deepspeed


def check_fsdp_device() -> None:
    """A ConfigError, before any work, when an `accelerate launch` asks for FSDP on a machine without an accelerator:
    Accelerate selects FSDP only among the processes of accelerators (GPUs), and would train CPU processes as DDP."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.accelerator.is_available():
        raise ConfigError(
            "accelerate config: distributed_type FSDP needs GPUs (Accelerate shards with FSDP only across "
            "accelerators; CPU processes would train as DDP); on CPU use accelerate_configs/deepspeed_zero2.yaml or "
            "deepspeed_zero3.yaml"
        )


def stopped_at(checkpoint: Path) -> bool:
    """Whether `checkpoint` was saved at the step where its run stopped (max_steps reached, or early stopping): the
    `TrainerControl` the Trainer saves with its state says so."""
    state = read_json(checkpoint / "trainer_state.json")
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {})
    return bool(control.get("args", {}).get("should_training_stop"))


def relocate_best_checkpoint(checkpoint: Path, output_dir: Path) -> None:
    """Point the best checkpoint that `checkpoint`'s state records at its folder under `output_dir`: the state keeps
    the path the run had (relative to its working folder, or under a run folder since moved), and Transformers drops a
    path it cannot find, so a run resumed elsewhere would publish its last weights instead of its best."""
    state_file = checkpoint / "trainer_state.json"
    state = read_json(state_file)
    recorded = state.get("best_model_checkpoint")
    if recorded is None:
        return
    here = output_dir / Path(recorded).name
    if here.is_dir() and recorded != str(here):
        atomic_write_json(state_file, {**state, "best_model_checkpoint": str(here)})


class ResumesWhereItStopped:
    """A Trainer mixin: a resumed run finds its best checkpoint where the work folder is now
    (`relocate_best_checkpoint`); resumed from the checkpoint of the step where its run stopped (`stopped_at`: killed
    before the model was published), `train()` takes no step more. Transformers' loop would take one, since it steps
    before it reads the stop flag; it still loads the best checkpoint and logs its closing summary, as the
    uninterrupted run did."""

    def train(self, resume_from_checkpoint: str | None = None, *args, **kwargs):
        self._stopped = resume_from_checkpoint is not None and stopped_at(Path(resume_from_checkpoint))
        if resume_from_checkpoint is not None:
            if self.args.should_save:
                relocate_best_checkpoint(Path(resume_from_checkpoint), Path(self.args.output_dir))
            self.accelerator.wait_for_everyone()  # every process then reads the relocated state
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _run_epoch(self, *args, **kwargs):
        if self._stopped:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


class LogsLastStep(TrainerCallback):
    """Logs the training loss at the last optimiser step too, whatever `logging_steps`: Transformers evaluates and
    saves there but logs only at multiples of `logging_steps`, so a stage's recorded end loss (`meta.json`,
    `training_log.jsonl`, the curves) would be that of an earlier window. Placed after an early-stopping callback,
    it also logs the steps since the last log when that callback ends the run (the loop's closing pass logs them)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and args.logging_strategy == IntervalStrategy.STEPS:
            control.should_log = True
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        if control.should_training_stop and args.logging_strategy == IntervalStrategy.STEPS:
            control.should_log = True
        return control


def native_bf16() -> bool:
    """Whether the GPU computes in bf16 natively (Ampere and later): `torch.cuda.is_bf16_supported()` also says yes
    where bf16 is only emulated (V100, T4), which would train slower than fp32 there."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def trainer_arguments(config: TrainingOptions, output_dir: Path) -> dict[str, Any]:
    """The TRL config arguments every stage sets the same way from the `TrainingOptions` of its config."""
    check_fsdp_device()
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "activation_checkpointing": config.gradient_checkpointing,
        "bf16": config.bf16 if config.bf16 is not None else native_bf16(),
        "ddp_backend": "gloo" if distributed and not cuda else None,
        "use_cpu": cpu_processes(),
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 1,
        "restore_callback_states_from_checkpoint": True,
        "seed": config.seed,
        "data_seed": config.seed,
        REPORT_TO: "none",
    }


def with_training_args(values: dict[str, Any], config: TrainingOptions) -> dict[str, Any]:
    """A stage's TRL arguments `values` with its config's `training_args` added; of the stage's, only `report_to` may
    be replaced (reading the config refused the others, by the stage's `trainer_args`)."""
    owned = sorted(set(values) & set(config.training_args) - {REPORT_TO})
    if owned:
        raise ConfigError(f"training_args: {owned[0]!r} is set by the stage itself")
    return values | config.training_args


def publish_model(
    output: StageOutput,
    codes_from: Path,
    config_name: str,
    config: Any,
    history: list[dict],
    meta: dict,
    extra: dict[str, Iterable[dict]] | None = None,
) -> None:
    """Publish the model saved in the work folder's `FINAL` as `output`, with the code tables of `codes_from`, the
    resolved config as `config_name`, the training log and its curves, any `extra` JSON Lines files and `meta`.

    The log, the extra files and, last, `meta.json` go into `FINAL` first: from then on the trained model is whole
    there, and a run stopped while publishing is published by its re-run (`republish_model`) instead of trained
    again. The output links its files, so `FINAL` stays whole until the output is in place."""
    final = output.work / FINAL
    if output.main_process:
        write_jsonl(final / TRAINING_LOG, history)
        for name, rows in (extra or {}).items():
            write_jsonl(final / name, rows)
        fsync_tree(final)
        atomic_write_json(final / META_FILE, meta)
    _publish_final(output, codes_from, config_name, config)


def republish_model(output: StageOutput, codes_from: Path, config_name: str, config: Any) -> dict | None:
    """The meta of the model `publish_model` made whole in the work folder of this run (same fingerprint: call it
    after `StageOutput.resume`) but did not publish, now published as it would have; None when there is none."""
    path = output.work / FINAL / META_FILE
    if not path.is_file():
        return None
    meta = read_json(path)
    _publish_final(output, codes_from, config_name, config)
    return meta


def _publish_final(output: StageOutput, codes_from: Path, config_name: str, config: Any) -> None:
    """Publish the whole `FINAL` of the work folder, its files linked, with the code tables, config and curves."""
    final = output.work / FINAL

    def write(folder: Path) -> None:
        shutil.copytree(final, folder, copy_function=_link_or_copy, dirs_exist_ok=True)
        for name in CODE_TABLES:
            shutil.copy2(codes_from / name, folder / name)
        (folder / config_name).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        history = [row for _, row in iter_json_lines(final / TRAINING_LOG)]
        plot_training_curves(history, folder / CURVES_FILE, output.path.name)

    output.publish(write)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link of `source` at `target` (no data copied), or a copy where the file system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def logged(history: list[dict], key: str, position: int) -> float | None:
    """The `position`-th value (0: first, -1: last) logged under `key` in a trainer's log history, or None."""
    values = [row[key] for row in history if key in row]
    return values[position] if values else None
