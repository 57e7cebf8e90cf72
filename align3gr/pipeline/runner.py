"""Runs a list of steps in order, skipping each one whose output is up to date (`PipelineState`), and reports.

A step re-runs when its options or any input's digest changed, or its output is missing or was altered; what
follows it then re-runs too, because its inputs' digests change. A run killed midway is continued by running the
same command again: finished steps are skipped, and a training step resumes from its last checkpoint.

An output is taken as altered (and set aside as `.NAME.edited` before its step runs) only when the state recorded it
with the key the step runs with now: an output the state recorded with another key, or not at all (published by a
run killed before it saved the state, or by a stage command run by hand), is left to the stage, which reuses it when
its own fingerprint (`align3gr.stage_output`) says it is current.
"""

from __future__ import annotations

import itertools
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import align3gr
from align3gr.errors import Align3GRError, ConfigError
from align3gr.io import read_json, sha256_json
from align3gr.pipeline.plan import SCORED, Step
from align3gr.pipeline.state import PipelineState, folder_digest
from align3gr.run_lock import held_descriptors

log = logging.getLogger("align3gr.pipeline")


class StageFailed(Align3GRError):
    """A stage run by the launcher exited with an error (its own output says why)."""


@dataclass
class Outcome:
    """One step after the run: whether it was reused, the wall time that produced it, its metrics if it evaluated."""

    step: Step
    reused: bool
    seconds: float
    metrics: dict | None


def step_key(step: Step, digests: dict[str, str]) -> str:
    """Hash of what a step's output depends on: its kind and options, its inputs' digests, the toolkit version."""
    missing = [name for name in step.inputs if name not in digests]
    if missing:
        raise ConfigError(f"step {step.name} reads {missing[0]!r}, which no earlier step produces")
    inputs = {name: digests[name] for name in step.inputs}
    return sha256_json({"kind": step.kind, "options": step.options, "inputs": inputs, "version": align3gr.__version__})


CURRENT = "current"
EDITED = "edited"


def recorded_output(step: Step, key: str, record: dict | None) -> tuple[dict | None, str | None]:
    """The digest of `step`'s folder now (`folder_digest`; None when it is absent) and how it stands against the
    state's `record`: `CURRENT` when recorded with `key` and unchanged since, `EDITED` when recorded with `key` and
    changed since, else None (no record or no folder, or recorded with another key: whether it is current is the
    stage's own fingerprint's call)."""
    current = folder_digest(step.path, record)
    if record is None or current is None or record["key"] != key:
        return current, None
    return current, CURRENT if current["digest"] == record["digest"] else EDITED


def launch(launcher: str, step: Step) -> None:
    """Run a step's stage command on the launcher's processes (`LAUNCHER -m align3gr.cli STAGE ...`), which hold the
    run folder's lock with the pipeline (`align3gr.run_lock`)."""
    command = [*shlex.split(launcher), "-m", "align3gr.cli", *step.command]
    log.info("launching: %s", shlex.join(command))
    finished = subprocess.run(command, check=False, pass_fds=held_descriptors())
    if finished.returncode != 0:
        raise StageFailed(f"step {step.label} ({step.name}) failed under the launcher with exit code "
                          f"{finished.returncode}: {shlex.join(command)}")  # fmt: skip


def set_aside(output: Path) -> Path:
    """Rename an output edited since the pipeline wrote it to the hidden sibling `.NAME.edited` (`.NAME.edited-2`,
    `-3`, ... when earlier edits are kept there), so no edits are lost and the step writes its folder anew; hidden, so
    no run-folder scan takes it for a stage's output. An output that is a symbolic link is set aside where it points,
    on its own disk."""
    output = output.resolve() if output.is_symlink() else output
    names = itertools.chain([f".{output.name}.edited"], (f".{output.name}.edited-{n}" for n in itertools.count(2)))
    aside = next(path for path in map(output.with_name, names) if not path.exists() and not path.is_symlink())
    os.replace(output, aside)
    return aside


def run_steps(steps: list[Step], run_dir: Path, launcher: str | None = None) -> list[Outcome]:
    """Run or reuse each step in order (training and evaluation steps through `launcher` when given); the state is
    saved after every step."""
    state = PipelineState(run_dir)
    digests: dict[str, str] = {}
    outcomes = []
    for number, step in enumerate(steps, start=1):
        key = step_key(step, digests)
        record = state.get(step.name)
        current, standing = recorded_output(step, key, record)
        if standing == CURRENT and not step.always:
            log.info("[%d/%d] %s: up to date (%s)", number, len(steps), step.label, step.name)
            seconds, reused = record["seconds"], True
        else:
            log.info("[%d/%d] %s -> %s", number, len(steps), step.label, step.name)
            if standing == EDITED:  # a stage finding its meta.json unchanged would take the rest as current too
                aside = set_aside(step.path)
                log.warning("%s changed since the pipeline wrote it; kept as %s, building it again", step.path, aside)
            if record is not None and record["key"] == key:  # a kill after the stage publishes leaves an unrecorded
                state.forget(step.name)  # output to the stage, not one taken for edited (set aside over the edits)
            start = time.perf_counter()
            if launcher and step.command:
                launch(launcher, step)
            else:
                step.run()
            seconds = round(time.perf_counter() - start, 1)
            current = folder_digest(step.path)
            if current is None:
                raise ConfigError(f"step {step.name} finished without writing {step.path}")
            reused = step.always and standing == CURRENT and current["digest"] == record["digest"]
            seconds = record["seconds"] if reused else seconds
            state.record(step.name, {"key": key, **current, "seconds": seconds, "step": step.label})
        digests[step.name] = current["digest"]
        metrics = read_json(step.path / "metrics.json") if step.kind in SCORED else None
        outcomes.append(Outcome(step, reused, seconds, metrics))
    return outcomes
