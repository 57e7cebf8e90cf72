"""`training_args`: the arguments of a stage's trainer config (TRL's `SFTConfig`, `SoftmaxDPOConfig`, or the
Transformers `TrainingArguments` UniSID's loop reads a few of) that the stage's config passes through unchanged.

Keys are the target config's own field names, checked and converted to their field's type when the stage's config is
read, before any work. A key the stage sets from one of its options must be set through that option, and a key
align3gr sets itself is refused with the reason; `report_to` (default "none") is the one setting of align3gr the
mapping may change.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from align3gr.config import close_matches, convert_value
from align3gr.errors import ConfigError

REPORT_TO = "report_to"
"""The argument whose align3gr default ("none": no tracker) `training_args` may change."""

TRAINING_FIXED = {
    "output_dir": "the stage's work folder `OUT.work`, published as OUT when the stage ends",
    "ddp_backend": "gloo for processes on CPU, from the hardware",
    "use_cpu": "from the hardware",
    "logging_first_step": "the training log and its curves start at step 1",
    "save_strategy": "a checkpoint every save_steps, for a killed run to resume from",
    "save_total_limit": "the work folder keeps the last checkpoint, and the best one while SFT's valid probe selects",
    "restore_callback_states_from_checkpoint": "a resumed run continues the callbacks' state saved in its checkpoint "
    "(early stopping's count of evaluations without gain), as an uninterrupted run would",
    "logging_strategy": "steps: the training log and its curves have a point every logging_steps",
}
"""What every TRL stage sets itself (`align3gr.training.trainer_arguments`), other than from an option of the stage."""

TRAINING_REFUSED = {
    "resume_from_checkpoint": "resume comes from the stage's OUT.work checkpoints",
    **dict.fromkeys(("do_train", "do_eval", "do_predict"), "the stage decides what it runs"),
    "save_only_model": "a resumed run ends like an uninterrupted one only from checkpoints that hold the optimizer, "
    "scheduler and RNG states too",
    "ignore_data_skip": "a resumed run ends like an uninterrupted one only by skipping the batches it already trained "
    "on",
    **dict.fromkeys(
        ("push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision"),
        "the trainer would push its work folder, a model without code tables; `align3gr push` publishes a stage",
    ),
}
"""Arguments align3gr leaves at their defaults because any other value breaks every stage (its resume from its work
folder, what it publishes)."""

SECRET_ARGUMENTS = ("hub_token", "push_to_hub_token")
"""Arguments a config never holds: configs are recorded in `meta.json` and published by `align3gr push`."""

TRAINING_RENAMED = {"data_seed": "seed", "activation_checkpointing": "gradient_checkpointing"}
"""Arguments `trainer_arguments` sets from a stage option of another name."""

MOVED = {
    "logging_dir": "Transformers 5 has no logging_dir: TensorBoard writes under the stage's output, in runs/, or in "
    "$TENSORBOARD_LOGGING_DIR when set",
}


def trainer_reporters() -> list[str]:
    """The `report_to` values a Transformers trainer accepts."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return ["all", "none", *INTEGRATION_TO_CALLBACK]


@dataclass(frozen=True)
class TrainerArgs:
    """What a stage's `training_args` may hold: the fields of `target` ("module:Class", imported when a mapping is
    first checked) but those the stage sets from its options (`renamed`: argument -> option; an option of the same
    name needs no entry) or itself (`fixed`: argument -> why), and those it cannot honour (`refused`: argument ->
    why); with `applied`, only those (`loop`: why)."""

    target: str
    fixed: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    renamed: Mapping[str, str] = field(default_factory=dict)
    applied: Collection[str] | None = None
    loop: str = ""
    reporters: Callable[[], Collection[str]] = trainer_reporters

    def target_class(self) -> type:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def check(self, stage: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """`values` converted to the target's field types; a `ConfigError` starting with `where` (the file and
        section, or the flag) for a key the target lacks (with the close ones), one the stage owns (with the option
        to use) or a value of the wrong type."""
        if not values:
            return {}
        target = self.target_class()
        known = {f.name for f in dataclasses.fields(target)}
        options = {f.name: f.name for f in dataclasses.fields(stage) if f.name in known} | dict(self.renamed)
        prefix = getattr(stage, "option_prefix", "")
        checked = {}
        for key, value in values.items():
            if key in SECRET_ARGUMENTS:
                raise ConfigError(
                    f"{where}: {key!r} is not taken from a config, which runs record and `align3gr push` publishes: "
                    "the Hub token comes from HF_TOKEN or `hf auth login`"
                )
            if key not in known:
                hint = f" ({MOVED[key]})" if key in MOVED else close_matches(key, known)
                raise ConfigError(f"{where}: {key!r} is not an argument of {target.__name__}{hint}")
            if key in options:
                option = prefix + options[key]
                raise ConfigError(
                    f"{where}: {key!r} is set from the option {option!r} of this section: set that instead"
                )
            if key in self.fixed:
                raise ConfigError(f"{where}: {key!r} is set by align3gr ({self.fixed[key]}), not by training_args")
            if key in self.refused:
                raise ConfigError(f"{where}: {key!r} cannot be set here ({self.refused[key]}): remove it")
            if self.applied is not None and key not in self.applied:
                applied = ", ".join(sorted(self.applied))
                raise ConfigError(f"{where}: {key!r} is not used: {self.loop}, which applies only {applied}")
            checked[key] = convert_value(target, key, value, where)
        if REPORT_TO in checked:
            self._check_reporters(checked[REPORT_TO], where)
        return checked

    def _check_reporters(self, value: Any, where: str) -> None:
        allowed = self.reporters()
        for name in [value] if isinstance(value, str) else value or []:
            if name not in allowed:
                raise ConfigError(
                    f"{where}: report_to={name!r}: expected one of {', '.join(allowed)}{close_matches(name, allowed)}"
                )


def check_training_args(stage: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The `check` of a stage config's `training_args` field: its class's `trainer_args` (a `TrainerArgs`)."""
    return stage.trainer_args.check(stage, values, where)


def training_args_field(help_text: str) -> Any:
    """The `training_args` field of a stage config: a mapping checked by `check_training_args` when read, with a
    repeatable `--training-arg KEY=VALUE` flag."""
    return field(
        default_factory=dict, metadata={"help": help_text, "flag": "--training-arg", "check": check_training_args}
    )
