"""The run-folder lock: one command at a time writes a run folder.

`align3gr pipeline` (with `--seeds` too) and `align3gr ablate` lock their run folder (its lock file and its stage lock
file: `run_folder_lock`); a stage command (`data build`,
`embed`, `tokenize`, `sft`, `evaluate`, `baselines`, `dpo`) locks the run folder its `--out` lies in: the nearest of
`--out` and its parents that holds a lock file, or else `--out`'s parent, through a stage lock file there
(`STAGE_LOCK_FILE`), which marks nothing: a stage output written straight into a shared folder (`--out /tmp/data`)
does not make every later output under that folder part of one run. The lock is an `fcntl.flock` on
`RUN/.align3gr.lock`, which records the holder (PID, host, command, start time) for the error a second command gets;
the system drops it when the holder exits or is killed, so a killed run never leaves a stale lock. The file stays
(empty) after a run: it marks the folder as a run folder for the stage commands.

A stage command that started writing into a folder before it became a run folder (`evaluate --out RUN/eval/test/sft`,
which locks `RUN/eval/test/`) and a first `pipeline` on RUN exclude each other too: once it holds its lock file,
`run_folder_lock` tries every stage lock file under RUN and stops, naming the holder, at one that is held; a stage
command, once it holds its stage lock file, looks for a lock file above `--out` again and stops at one that appeared
meanwhile. The pipeline creates its lock file before it looks below, the stage command takes its lock before it
looks above, so of two that start together at least one sees the other.

One logical run may be several processes. While it holds the lock, the holder names the lock file in the environment
(`HELD`), so the stage commands it launches (`accelerate launch -m align3gr.cli STAGE ...`) see their run folder is
already theirs; the launcher process inherits the open lock file (`held_descriptors`), so the lock lasts while a
launched stage runs, even when the pipeline was killed. Of an `accelerate launch` started by hand, only the process of
global rank 0 takes the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from align3gr.errors import Align3GRError
from align3gr.io import make_folders, process_alive

LOCK_FILE = ".align3gr.lock"
STAGE_LOCK_FILE = ".align3gr.stage.lock"
HELD = "ALIGN3GR_RUN_LOCK"
"""The environment variable naming the lock file the process (or the one that launched it) holds."""
_descriptors: dict[str, int] = {}
"""The lock file descriptors this process holds, by lock path."""


class RunFolderLocked(Align3GRError):
    """Another command is writing the run folder; the message names it."""


def holder_text(lock: Path) -> str:
    """Who holds `lock`, from what it recorded: command, PID, host, start time and command line; when that process
    is gone, a stage command it launched still holds it."""
    try:
        record = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        return "another process (starting: it has not recorded itself yet)"
    text = (f"`{record.get('command')}` (pid {record.get('pid')} on host {record.get('host')}, since "
            f"{record.get('started')}; command line: {record.get('argv')})")  # fmt: skip
    if isinstance(record.get("pid"), int) and not process_alive(str(record.get("host")), record["pid"]):
        text += ", which is gone, but a stage command it launched still runs"
    return text


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold the lock file `name` of `run_dir` (created if absent) while the block runs, or raise `RunFolderLocked`
    at once naming the holder; a no-op when this process or the one that launched it holds it already (`HELD`)."""
    run_dir = Path(run_dir)
    lock = run_dir.resolve() / name
    if os.environ.get(HELD) == str(lock):
        yield
        return
    make_folders(run_dir)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunFolderLocked(
            f"{run_dir}: this run folder is being written by {holder_text(lock)}; wait for it to finish, or stop it "
            f"and start again (a killed run releases the lock)"
        ) from None
    record = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "argv": shlex.join(sys.argv)}  # fmt: skip
    outer = os.environ.get(HELD)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(descriptor)
        os.environ[HELD] = str(lock)
        _descriptors[str(lock)] = descriptor
        yield
    finally:
        _descriptors.pop(str(lock), None)
        if outer is None:
            os.environ.pop(HELD, None)
        else:
            os.environ[HELD] = outer
        os.ftruncate(descriptor, 0)
        os.close(descriptor)


def refuse_stage_commands_below(run_dir: Path) -> None:
    """Raise `RunFolderLocked`, naming the holder, when another command holds a stage lock file under `run_dir` (a
    stage command that started writing there before `run_dir` was a run folder, or a pipeline on a folder inside it);
    each one found free is released at once."""
    for lock in run_dir.resolve().rglob(STAGE_LOCK_FILE):
        if lock.parent == run_dir.resolve() or str(lock) in _descriptors:
            continue
        try:
            descriptor = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderLocked(
                f"{run_dir}: {lock.parent} inside this run folder is being written by {holder_text(lock)}; wait for "
                "it to finish, or stop it and start again"
            ) from None
        finally:
            os.close(descriptor)


def held_descriptors() -> tuple[int, ...]:
    """The open lock files of the run folders this process holds, for a launched stage command to inherit: the lock
    lasts until it exits too, so a killed pipeline's stages still running keep the run folder theirs."""
    return tuple(_descriptors.values())


def run_folder_of(out: str | Path) -> Path:
    """The run folder a stage command writing `out` locks: the nearest of `out` and its parents holding a lock file,
    else `out`'s parent."""
    out = Path(out).resolve()
    return next((folder for folder in (out, *out.parents) if (folder / LOCK_FILE).is_file()), out.parent)


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path, command: str) -> Iterator[None]:
    """The lock `pipeline`, `--seeds` and `ablate` hold: the run folder's lock file and its stage lock file, which a
    stage command writing into the folder before it became a run folder holds, so neither writes while the other
    does; then no stage command may hold a stage lock file under it (`refuse_stage_commands_below`). A no-op when
    this process or the one that launched it holds the folder already."""
    if os.environ.get(HELD) == str(Path(run_dir).resolve() / LOCK_FILE):
        yield
        return
    with run_lock(run_dir, command, STAGE_LOCK_FILE), run_lock(run_dir, command):  # `HELD` names the second
        refuse_stage_commands_below(Path(run_dir))
        yield


@contextlib.contextmanager
def stage_lock(out: str | Path, command: str) -> Iterator[None]:
    """The lock a stage command writing `out` holds: its run folder's (`run_folder_of`), taken by global rank 0 only
    under a launcher. Taken through a stage lock file, it is checked once held: a run folder above `out` that
    appeared meanwhile (a first pipeline started) is locked instead, which stops at once naming its holder."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    folder = run_folder_of(out)
    if not (folder / LOCK_FILE).is_file():
        with run_lock(folder, command, STAGE_LOCK_FILE):
            if run_folder_of(out) == folder:
                yield
                return
        folder = run_folder_of(out)
    with run_lock(folder, command):
        yield
