"""A stage's output folder: whether it is up to date, the work folder a killed run resumes from, and its publication
(`align3gr.io.atomic_directory`: never visible half-written).

A stage that skips itself (data, SFT, each DPO stage) fingerprints its inputs: its output is up to date when the
output's `meta.json` records that fingerprint. The other stages are skipped by the pipeline alone. Under `accelerate
launch` (`distributed`) every process runs the stage; the main one writes, the others wait for it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from align3gr.errors import ConfigError, DataError
from align3gr.io import atomic_directory, atomic_write_json, read_json, remove_stale_temporaries, write_json

log = logging.getLogger(__name__)

META_FILE = "meta.json"
NOT_A_MODEL = ("sequences.jsonl", "align3gr.json")
"""Files beside a `meta.json` that SFT and DPO outputs never hold: a dataset's, a published model's."""
NOT_AN_EVALUATION = (META_FILE,)
"""What an evaluation's folder (beside its `metrics.json`) never holds, and a published model's does."""
NOT_CODE_TABLES = (META_FILE,)
"""What the tokenizer's output (beside its `item_codes.json`) never holds, and SFT's, DPO's and a push's do."""
LOGS = "runs"
"""The folder of the experiment trackers' logs (TensorBoard's event files, with `report_to`) in the work folder while
a stage trains; published with the output."""


def complete_checkpoint(folder: Path) -> bool:
    """Whether `folder` is a Trainer checkpoint written to the end: named `checkpoint-STEP`, holding the
    `trainer_state.json` the Trainer saves last, whole (a kill during a save leaves one without it, or with a cut one:
    the Trainer writes it in place)."""
    if not folder.name.removeprefix("checkpoint-").isdecimal():
        return False
    try:
        return isinstance(json.loads((folder / "trainer_state.json").read_bytes()), dict)
    except (OSError, ValueError):  # missing, unreadable, cut off or not UTF-8 (UnicodeDecodeError is a ValueError)
        return False


WORK_MARKER = "fingerprint"
NUMERICS_FILE = "numerics.json"
"""In a work folder: `align3gr.devices.numerics()` when its run started, compared when it resumes."""
"""The file that marks a work folder as a run's (its fingerprint)."""


def work_is_ours(work: Path) -> bool:
    """Whether a stage's work folder may be deleted: absent, empty, or marked by a run (`WORK_MARKER`); a folder of
    the user's that happens to be named `OUT.work` is not."""
    if not work.exists():
        return True
    return work.is_dir() and ((work / WORK_MARKER).is_file() or not any(work.iterdir()))


def fresh_work(work: Path, fingerprint: str) -> None:
    """Empty the work folder `work` and mark it with `fingerprint`; a folder that is not a work folder is refused."""
    if not work_is_ours(work):
        raise DataError(f"this folder beside the output has no {WORK_MARKER} file, which every work folder of this "
                        "align3gr has (an older release's had none): if it holds nothing of yours, delete it; "
                        "otherwise move it, or choose another output", work)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text(fingerprint)


def check_apart(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """A ConfigError, before any work, when the output folder `out` is one of a stage's `inputs` (flag -> folder) or
    holds one: the stage replaces its output whole, and the input would go with it (`sft --data D --out D`)."""
    where = Path(out).resolve()
    for flag, value in inputs.items():
        if value is None or not Path(value).exists():
            continue
        path = Path(value).resolve()
        if path.is_relative_to(where):  # the output folder itself, or a folder inside it
            relation = "is" if path == where else "holds"
            raise ConfigError(f"the output folder {out} {relation} {flag} {value}, which the output would replace "
                              "(a stage replaces its output folder whole): choose another output folder")  # fmt: skip


@dataclass(frozen=True)
class StageOutput:
    """The output folder `path` of a stage; `distributed`: every process of an `accelerate launch` runs the stage.
    `holds`: a file every output of this stage holds; `lacks`: files no output of it holds (those of other stages'
    outputs that hold `holds` too: a dataset's and a published model's `meta.json`). A folder with files but without
    `holds`, or with one of `lacks`, is not one, and is refused before any work instead of being replaced as a whole
    (no `holds`: the stage checks with `claim`)."""

    path: Path
    distributed: bool = False
    holds: str | None = None
    lacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path}: the output path is a file; give a folder (it is replaced as a whole)")
        if self.holds and self.holds_other_files(self.holds):
            raise ConfigError(
                f"{self.path}: the output folder holds files but no {self.holds}, so it is not an output of this "
                "stage, and the stage replaces its output folder as a whole; choose a new or empty folder"
            )
        foreign = [name for name in self.lacks if (self.path / name).exists()]
        if foreign:
            raise ConfigError(
                f"{self.path}: the output folder holds {foreign[0]}, so it is another stage's output, not one of this "
                "stage, and the stage replaces its output folder as a whole; choose a new or empty folder"
            )

    def holds_other_files(self, signature: str) -> bool:
        """Whether the output folder holds files but not `signature`, a file every output of the stage holds: then it
        is not one, and replacing it would lose them."""
        return self.path.is_dir() and not (self.path / signature).is_file() and any(self.path.iterdir())

    @property
    def work(self) -> Path:
        """`OUT.work` beside the output: what a run writes before it publishes (checkpoints), kept when it is killed."""
        return self.path.parent / f"{self.path.name}.work"

    @property
    def main_process(self) -> bool:
        """Whether this process writes the output: the only one, or the main one of an `accelerate launch`."""
        return not self.distributed or _state().is_main_process

    def current(self, fingerprint: str) -> dict | None:
        """The output's meta when it records `fingerprint`: the stage has nothing to do, and a work folder the run
        that published it left behind is deleted (`_finished`)."""
        self._recover()
        path = self.path / META_FILE
        if not path.is_file():
            return None
        meta = read_json(path)
        return self._finished(meta, fingerprint) if meta.get("fingerprint") == fingerprint else None

    def _recover(self) -> None:
        """Publish the output a writer killed while publishing it left whole beside the path, or put back the one it
        was replacing, so the run that follows finds it (`remove_stale_temporaries`); the main process goes first."""
        with self._main_process_first():
            if self.main_process:
                remove_stale_temporaries(self.path)

    def _finished(self, meta: dict, fingerprint: str) -> dict:
        """`meta`, of the output that is current for `fingerprint`; the work folder of the run that published it,
        left when that run was killed before deleting it (checkpoints), is deleted by the main process. A work folder
        of another fingerprint is kept: that run resumes from it."""
        marker = self.work / WORK_MARKER
        if self.main_process and marker.is_file() and marker.read_text() == fingerprint:
            shutil.rmtree(self.work, ignore_errors=True)
        return meta

    def claim(
        self, fingerprint: str, overwrite: bool, kind: str, inputs: str, marks: tuple[str, ...] = ()
    ) -> dict | None:
        """`current`, for a stage that replaces nothing but its own output: a folder holding another output of its
        `kind` (a meta unreadable or of another fingerprint) is an error naming the `inputs` it is made of, unless
        `overwrite`; a folder holding files without a meta, or a meta without the `marks` keys of its kind (another
        stage's output), is one even then (they are not ours to delete). Only the meta is read: the other files were
        checked when written."""
        self._recover()
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise DataError("output path exists and is not a folder", self.path)
        if self.holds_other_files(META_FILE):
            raise DataError(f"output folder is not empty and holds no {kind}; choose an empty folder", self.path)
        if not (self.path / META_FILE).is_file():
            return None
        try:
            meta = read_json(self.path / META_FILE)
        except DataError:
            meta = None  # cut short or corrupt: replaceable with `overwrite`
        if isinstance(meta, dict) and meta.get("fingerprint") == fingerprint:
            return self._finished(meta, fingerprint)
        if isinstance(meta, dict) and not all(key in meta for key in marks):
            raise DataError(f"output folder holds another stage's output, not a {kind} (its {META_FILE} has no "
                            f"{', '.join(marks)}); choose another folder", self.path)  # fmt: skip
        if not overwrite:
            raise DataError(
                f"output folder already holds a different {kind} (other {inputs}); "
                "pass --overwrite to replace it or choose another folder",
                self.path,
            )
        return None

    def resume(self, fingerprint: str) -> str | None:
        """The checkpoint to resume from when the work folder holds one of this exact run (same fingerprint);
        otherwise the work folder starts empty, marked with the fingerprint. The main process goes first: the others
        then find its work folder."""
        from align3gr.devices import numerics

        marker, record, now = self.work / WORK_MARKER, self.work / NUMERICS_FILE, numerics()
        with self._main_process_first():
            if marker.is_file() and marker.read_text() == fingerprint:
                checkpoints = [p for p in self.work.glob("checkpoint-*") if complete_checkpoint(p)]
                started = read_json(record) if record.is_file() else now
                if checkpoints and started != now:
                    log.warning(
                        "%s: resuming under other numerics than the run started with (%s, now %s): the result will "
                        "equal neither setting's uninterrupted run", self.path, started, now,
                    )  # fmt: skip
                return str(max(checkpoints, key=lambda p: int(p.name.split("-")[1]))) if checkpoints else None
            fresh_work(self.work, fingerprint)
            if self.main_process:
                write_json(record, now)
            return None

    def publish(self, write: Callable[[Path], object], meta: dict | None = None) -> None:
        """`write(folder)` fills a fresh folder, the trackers' logs of the work folder (`LOGS`) move into it, `meta`
        (if given) becomes its `meta.json`, and the folder replaces the output (`atomic_directory`); then the work
        folder is deleted. The main process publishes, the others wait for it."""
        if self.main_process:
            with atomic_directory(self.path) as folder:
                write(folder)
                if (self.work / LOGS).is_dir():  # moved, not renamed: a linked output may be on another disk
                    shutil.move(self.work / LOGS, folder / LOGS)
                if meta is not None:
                    write_json(folder / META_FILE, meta)
            if work_is_ours(self.work):
                shutil.rmtree(self.work, ignore_errors=True)
        self._wait()

    def write_meta(self, meta: dict) -> None:
        """Replace the published output's `meta.json` (atomically). The main process writes, the others wait for it."""
        if self.main_process:
            atomic_write_json(self.path / META_FILE, meta)
        self._wait()

    def _main_process_first(self) -> AbstractContextManager:
        return _state().main_process_first() if self.distributed else nullcontext()

    def _wait(self) -> None:
        if self.distributed:
            _state().wait_for_everyone()


def _state():
    """The processes of this run (Accelerate's shared state, set up by the stage the way it needs)."""
    from accelerate import PartialState

    return PartialState()
