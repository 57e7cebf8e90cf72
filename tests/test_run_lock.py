"""The run-folder lock: a second command writing a run folder stops at once naming the holder; the stage commands
the holder launches are not refused and keep the lock while they run; a killed run leaves no lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pipeline import write_config

from align3gr.cli import main
from align3gr.pipeline import run_pipeline
from align3gr.run_lock import (
    LOCK_FILE,
    STAGE_LOCK_FILE,
    RunFolderLocked,
    run_folder_lock,
    run_folder_of,
    run_lock,
    stage_lock,
)

ROOT = Path(__file__).resolve().parent.parent
LAUNCHED = """
import sys
from align3gr.run_lock import stage_lock
with stage_lock(sys.argv[1], "align3gr sft"):
    print("ran")
"""
HOLDER = """
import subprocess, sys, time
from align3gr.run_lock import held_descriptors, run_lock
with run_lock(sys.argv[1], "align3gr pipeline"):
    child = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1] + "/sft"], capture_output=True, text=True)
    print(child.stdout.strip() or child.stderr.strip().splitlines()[-1], flush=True)
    stage = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=held_descriptors())
    print(stage.pid, flush=True)
    time.sleep(600)
"""


def test_a_second_pipeline_on_a_locked_run_folder_stops_at_once_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", HOLDER, str(run), LAUNCHED]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ran"  # the holder's own launched stage command is not refused
        stage = int(holder.stdout.readline())
        config = write_config(tmp_path / "small.yaml")
        with pytest.raises(RunFolderLocked, match=rf"being written by `align3gr pipeline` \(pid {holder.pid} on"):
            run_pipeline(config, run)
        assert main(["pipeline", "--config", str(config), "--run-dir", str(run)]) == 2
        assert main(["embed", "--data", str(run / "data"), "--out", str(run / "embeddings")]) == 2
        assert main(["evaluate", "--model", str(run / "sft"), "--data", str(run / "data"),
                     "--out", str(run / "eval" / "test" / "sft")]) == 2  # fmt: skip
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 3 and all(f"pid {holder.pid} on host" in line for line in errors)
        # each refused before any work (a lock that waited would block until the holder's 600 s sleep ends): the run
        # folder holds the holder's lock files, no stage output, and the stages' output folders were not created
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, STAGE_LOCK_FILE]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "small.yaml"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    try:
        with pytest.raises(RunFolderLocked, match=rf"(?s)pid {holder.pid} .*which is gone, but a stage command it"):
            run_pipeline(config, run)
    finally:
        os.kill(stage, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # the killed stage's lock file closes once the system has reaped it
        try:
            with run_lock(run, "align3gr pipeline"):
                assert os.environ["ALIGN3GR_RUN_LOCK"] == str(run.resolve() / LOCK_FILE)
            break
        except RunFolderLocked:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert "ALIGN3GR_RUN_LOCK" not in os.environ


def test_a_stage_command_locks_the_run_folder_its_output_lies_in(tmp_path):
    run = tmp_path / "run"
    assert run_folder_of(run / "eval" / "test" / "sft") == (run / "eval" / "test").resolve()
    with run_lock(run, "align3gr pipeline"):
        pass
    assert run_folder_of(run / "eval" / "test" / "sft") == run.resolve()
    assert run_folder_of(run / "dpo") == run.resolve()
    assert run_folder_of(tmp_path / "elsewhere" / "sft") == (tmp_path / "elsewhere").resolve()


def test_a_stage_output_in_a_shared_folder_does_not_make_that_folder_a_run_folder(tmp_path):
    """`--out SHARED/data` outside any run folder locks SHARED through the stage lock file, which marks nothing:
    a later output elsewhere under SHARED is not taken to lie in a run folder SHARED."""
    shared = tmp_path / "shared"
    with stage_lock(shared / "data", "align3gr data build"):
        assert os.environ["ALIGN3GR_RUN_LOCK"] == str(shared.resolve() / STAGE_LOCK_FILE)
    assert sorted(p.name for p in shared.iterdir()) == [STAGE_LOCK_FILE]
    assert run_folder_of(shared / "exp" / "eval" / "sft") == (shared / "exp" / "eval").resolve()


def test_a_pipeline_and_a_stage_command_writing_a_new_folder_exclude_each_other(tmp_path, monkeypatch):
    """A stage command writing RUN/data before RUN is a run folder holds RUN's stage lock file; a pipeline on RUN
    (another process: no `HELD` of its own) stops at once naming it, and takes the folder once it is done."""
    run = tmp_path / "run"
    with stage_lock(run / "data", "align3gr data build"):
        monkeypatch.delenv("ALIGN3GR_RUN_LOCK")
        with pytest.raises(RunFolderLocked, match="being written by `align3gr data build`"):
            with run_folder_lock(run, "align3gr pipeline"):
                pass
        assert not (run / LOCK_FILE).exists()
    with run_folder_lock(run, "align3gr pipeline"):
        assert os.environ["ALIGN3GR_RUN_LOCK"] == str(run.resolve() / LOCK_FILE)
        with run_folder_lock(run, "align3gr pipeline"):  # a seed's or a rung's run inside it
            pass


STAGE = """
import sys, time
from align3gr.run_lock import stage_lock
with stage_lock(sys.argv[1], "align3gr evaluate"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_first_pipeline_stops_while_a_stage_command_writes_deep_inside_its_folder(tmp_path):
    """`evaluate --out RUN/eval/test/sft` before RUN is a run folder locks `RUN/eval/test/` (its stage lock file); a
    first pipeline on RUN finds that lock held under RUN and stops at once naming the stage command, then takes the
    folder once the stage command is gone; a stage command started after the pipeline locks RUN and is refused."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ALIGN3GR_RUN_LOCK", None)
    out = run / "eval" / "test" / "sft"
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert stage.stdout.readline().strip() == "locked"
        assert (run / "eval" / "test" / STAGE_LOCK_FILE).is_file() and not (run / LOCK_FILE).exists()
        with pytest.raises(RunFolderLocked, match=rf"eval/test inside this run folder is being written by "
                                                  rf"`align3gr evaluate` \(pid {stage.pid} on"):  # fmt: skip
            with run_folder_lock(run, "align3gr pipeline"):
                pass
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    with run_folder_lock(run, "align3gr pipeline"):
        assert os.environ["ALIGN3GR_RUN_LOCK"] == str(run.resolve() / LOCK_FILE)
        later = subprocess.run([sys.executable, "-c", STAGE, str(out)], capture_output=True, text=True, env=env)
        assert later.returncode != 0 and "being written by `align3gr pipeline`" in later.stderr
