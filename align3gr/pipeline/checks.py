"""Plan-time checks: what each configured stage needs from the data and the environment, checked before the run does
any work, every unmet need listed in one error.

- The RF-DPO stages need feedback levels in the dataset (ratings, or reviews scored by `data.sentiment_model`);
  `--skip-unmet` leaves them out.
- SFT task `user_align` (B2) needs user profiles; `--skip-unmet` leaves it out.
- The tokenizer's first-level codebooks need at least as many items (and, dual, users) as codes.
- UniSID's positives by category depth (UniSID Eq. 5, `multi_granularity`) need item categories that are not on
  every item.
- `sft.model`, and UniSID's `model` and `reconstruction_model`, when they name a path (not a Hub id), UniSID's
  `summary_model` and `embed.semantic_model` need a local model folder with `config.json`.
- The run folder's disk needs `MIN_FREE_BYTES` free, plus three times a local base model's weights (a fine-tuned copy,
  a checkpoint, one more stage's copy): a rough minimum, not an estimate.

The environment's needs are checked first, before the run folder is touched. The data's are checked on the built
dataset: before the data step when its output is current (the state records it with the key it would be built with
now, unchanged, and the raw files hash as its `meta.json` records), else right after the data step, before the
embeddings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from align3gr.data.build import source_records
from align3gr.data.builder import get_builder
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.texts import informative_categories
from align3gr.dpo.config import STAGES
from align3gr.dpo.preferences import NO_FEEDBACK, has_feedback_levels
from align3gr.errors import ConfigError
from align3gr.io import read_json
from align3gr.models.local import require_model_folder
from align3gr.options import TINY
from align3gr.pipeline.config import PipelineConfig
from align3gr.pipeline.plan import Plan, Step, data_steps, in_run
from align3gr.pipeline.runner import CURRENT, Outcome, recorded_output, run_steps, step_key
from align3gr.pipeline.state import PipelineState
from align3gr.run_lock import run_folder_lock
from align3gr.stage_output import META_FILE
from align3gr.tokenize.stage import check_sizes

MIN_FREE_BYTES = 1 << 30
"""Free disk a run needs at least (1 GiB: the tiny default's whole run folder is a few hundred MB)."""
SKIP_OPTION = "--skip-unmet"


@dataclass(frozen=True)
class Checked:
    """What a run does after the checks: its config, whether its DPO stages run, what was left out (one line each,
    for the summary), and the steps the checks ran ahead of the run (the data step)."""

    config: PipelineConfig
    dpo: bool = True
    skipped: tuple[str, ...] = ()
    built: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    def as_run(self, outcomes: list[Outcome]) -> list[Outcome]:
        """`outcomes` with the steps the checks ran counted as run by this invocation, not as reused."""
        return [dataclasses.replace(o, reused=False) if o.step.name in self.built else o for o in outcomes]


@dataclass(frozen=True)
class Need:
    """An unmet need (the option or stage it stops, and why), and how `--skip-unmet` leaves its stage out (None: it
    cannot be left out)."""

    text: str
    skip: Callable[[Checked], Checked] | None = None


def names_a_folder(model: str) -> bool:
    """Whether a model option can only mean a local folder: an existing path, or a value that is no Hub id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(model).exists():
        return True
    try:
        validate_repo_id(model)
    except HFValidationError:
        return True
    return False


def weights_bytes(folder: Path) -> int:
    """The size of a model folder's weight files."""
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))


def model_needs(config: PipelineConfig) -> list[Need]:
    """The model folders the config names that are missing (or hold no `config.json`)."""
    from align3gr.embed.semantic import resolve_encoder_path

    models = [("sft.model", config.sft.model)]
    unisid = config.unisid()
    if unisid is not None:
        models += [("tokenize.unisid_options.model", unisid.model),
                   ("tokenize.unisid_options.reconstruction_model", unisid.reconstruction_model)]  # fmt: skip
    folders = [(option, model) for option, model in models if model != TINY and names_a_folder(model)]
    if unisid is not None and unisid.summary_model:
        folders.append(("tokenize.unisid_options.summary_model", unisid.summary_model))
    needs = []
    for option, folder in folders:
        try:
            require_model_folder(folder, option)
        except ConfigError as err:
            needs.append(Need(str(err)))
    try:
        resolve_encoder_path(config.embed.semantic_model)
    except ConfigError as err:
        needs.append(Need(f"embed: {err}"))
    return needs


def code_length_needs(config: PipelineConfig) -> list[Need]:
    """SP-DPO prefix thresholds that the dual tokenizer's SCIDs may not meet (`DPOStageConfig.check_code_length`):
    they have `tokenize.levels` codes, and one more only when the data's collisions overflow a code prefix, which
    is known after tokenizing; so the thresholds are checked against `tokenize.levels` here, before any work (the
    DPO stage checks its start model's table again)."""
    if config.unisid() is not None:
        return []
    levels = config.tokenize.levels
    try:
        config.dpo.check_code_length(levels, "tokenize.levels")
    except ConfigError as err:
        return [Need(f"dpo: {err}")]
    return []


def disk_needs(config: PipelineConfig, run_dir: Path) -> list[Need]:
    """Too little free disk where the run folder is (or will be)."""
    model = Path(config.sft.model)
    base = weights_bytes(model) if config.sft.model != TINY and model.is_dir() else 0
    needed = MIN_FREE_BYTES + 3 * base
    existing = next(folder for folder in (run_dir.absolute(), *run_dir.absolute().parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if free >= needed:
        return []
    return [Need(f"disk: {free / 2**30:.1f} GiB free at {existing}; the run needs at least {needed / 2**30:.1f} GiB "
                 f"(1 GiB plus three times the base model's weights)")]  # fmt: skip


def data_needs(config: PipelineConfig, dataset: Dataset) -> list[Need]:
    """What the configured stages need from the dataset and it lacks."""
    needs = []
    feedback = [stage for stage in config.dpo.stages if STAGES[stage][0] == "real_feedback"]
    if feedback and not has_feedback_levels(dataset):
        text = (f"dpo.stages {', '.join(feedback)}: {NO_FEEDBACK} in {dataset.path}; remove them from dpo.stages "
                "(or, for a dataset with reviews, set data.sentiment_model to score them)")  # fmt: skip
        needs.append(Need(text, skip=without_real_feedback))
    if "user_align" in config.sft.tasks and not any(user.profile.strip() for user in dataset.users.values()):
        text = (f"sft.tasks user_align (B2) maps user profiles to user SCIDs, and no user of {dataset.path} has a "
                "profile; remove it from sft.tasks")  # fmt: skip
        needs.append(Need(text, skip=without_user_align if len(config.sft.tasks) > 1 else None))
    try:
        check_sizes(config.tokenize, len(dataset.items), len(dataset.sequences))
    except ConfigError as err:
        needs.append(Need(f"tokenize.{err} (of {dataset.path})"))
    unisid = config.unisid()
    if unisid is not None and unisid.multi_granularity and not informative_categories(dataset):
        needs.append(Need(f"tokenize.unisid_options.multi_granularity: UniSID's positives by category depth (Eq. 5) "
                          f"need item categories, and no item of {dataset.path} has one that is not on all items; set "
                          "it to false (InfoNCE at every level)"))  # fmt: skip
    return needs


def without_real_feedback(checked: Checked) -> Checked:
    """The run without its RF-DPO stages (without DPO when they were all its stages)."""
    stages = checked.config.dpo.stages
    kept = [stage for stage in stages if STAGES[stage][0] != "real_feedback"]
    note = f"{', '.join(s for s in stages if s not in kept)}: {NO_FEEDBACK}"
    config = checked.config.replace("dpo", stages=kept) if kept else checked.config
    return dataclasses.replace(checked, config=config, dpo=checked.dpo and bool(kept), skipped=(*checked.skipped, note))


def without_user_align(checked: Checked) -> Checked:
    """The run without SFT task user_align (B2)."""
    tasks = [task for task in checked.config.sft.tasks if task != "user_align"]
    note = "sft task user_align (B2): no user has a profile"
    return dataclasses.replace(checked, config=checked.config.replace("sft", tasks=tasks),
                               skipped=(*checked.skipped, note))  # fmt: skip


def refuse_unmet(needs: list[Need], skip_unmet: bool, run_dir: Path) -> None:
    """A ConfigError listing every unmet need (with `skip_unmet`, every one that cannot be left out), if any."""
    blocking = [need for need in needs if not skip_unmet or need.skip is None]
    if blocking:
        lines = [f"  - {need.text}" + (f" ({SKIP_OPTION} leaves it out)" if need.skip else "") for need in blocking]
        raise ConfigError(f"{run_dir}: the run cannot start; unmet needs:\n" + "\n".join(lines))


def resolved(config: PipelineConfig, needs: list[Need], skip_unmet: bool, run_dir: Path) -> Checked:
    """The run as it goes ahead: `config` when nothing is unmet; with `skip_unmet`, without the stages whose input is
    absent (`refuse_unmet` otherwise)."""
    refuse_unmet(needs, skip_unmet, run_dir)
    checked = Checked(config)
    for need in needs:
        checked = need.skip(checked)
    return checked


def data_current(data: Step, config: PipelineConfig, run_dir: Path) -> bool:
    """Whether the data step's output is current before the step runs: the run's state records it with the key it
    would be built with now, unchanged since (`recorded_output`), and the raw files are those it was built from (the
    sha256 its `meta.json` records, which the data step compares too: the key alone leaves raw files out)."""
    record = PipelineState(run_dir).get(data.name)
    if recorded_output(data, step_key(data, {}), record)[1] != CURRENT:
        return False
    source = config.source
    raw = source_records(get_builder(source.builder, source.options), Path(source.source), data.path)
    return read_json(data.path / META_FILE).get("sources") == raw


def check_plan(plan: Plan, skip_unmet: bool, launcher: str | None = None, build: bool = False) -> Checked | None:
    """The run of `plan` after its checks (`resolved`). When its data is not built yet, or not current
    (`data_current`), only the environment is checked and None returned, unless `build`: the data step runs first."""
    needs = model_needs(plan.config) + code_length_needs(plan.config) + disk_needs(plan.config, plan.run_dir)
    data = data_steps(plan)[0]
    built: tuple[str, ...] = ()
    if not data_current(data, plan.config, plan.run_dir):
        if not build:
            refuse_unmet(needs, skip_unmet, plan.run_dir)
            return None
        run_steps([data], plan.run_dir, launcher)
        built = (data.name,)
    needs += data_needs(plan.config, load_dataset(data.path))
    return dataclasses.replace(resolved(plan.config, needs, skip_unmet, plan.run_dir), built=built)


def check_launcher(launcher: str | None) -> None:
    """A ConfigError, before any work, when `--launcher` cannot be split into a command line or its program is not
    on PATH (the stages it runs come after the data, the embeddings and the tokenizer)."""
    if launcher is None:
        return
    try:
        parts = shlex.split(launcher)
    except ValueError as err:
        raise ConfigError(f"--launcher {launcher!r}: {err}") from None
    if not parts or shutil.which(parts[0]) is None:
        program = parts[0] if parts else ""
        raise ConfigError(f"--launcher {launcher!r}: no program {program!r} on PATH (e.g. 'accelerate launch ...')")


@contextlib.contextmanager
def checked_run(
    config: PipelineConfig, run_dir: Path, command: str, skip_unmet: bool = False, launcher: str | None = None
) -> Iterator[Checked]:
    """Check the run (`check_plan`), lock its folder (`align3gr.run_lock`), build the data and check again if it was
    not built, and yield the checked run while the lock is held. An unmet need found before the data step leaves
    nothing behind."""
    check_launcher(launcher)
    plan = Plan(config, run_dir / "config.yaml", run_dir, in_run(run_dir))
    checked = check_plan(plan, skip_unmet)
    with run_folder_lock(run_dir, command):
        yield checked or check_plan(plan, skip_unmet, launcher, build=True)
