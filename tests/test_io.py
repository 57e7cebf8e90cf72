"""Atomic outputs: a killed writer's temporary folder is cleaned by the next write, a live writer's is kept."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import align3gr.io as io_module
from align3gr.errors import ConfigError, DataError
from align3gr.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    make_folders,
    read_json,
    remembered_sha256,
    remove_stale_temporaries,
)
from align3gr.stage_output import NOT_A_MODEL, NOT_AN_EVALUATION, NOT_CODE_TABLES, StageOutput, check_apart

ROOT = Path(__file__).resolve().parent.parent
WRITER = """
import sys, time
from align3gr.io import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "part.txt").write_text("half")
    print(tmp, flush=True)
    time.sleep(600)
"""


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process writing `target` through `atomic_directory`, stopped inside it; and its temporary folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    return process, Path(process.stdout.readline().strip())


def test_a_killed_writers_temporary_is_removed_and_a_live_writers_is_kept(tmp_path):
    target = tmp_path / "out"
    killed, killed_tmp = start_writer(target)
    live, live_tmp = start_writer(target)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_tmp.is_dir() and live_tmp.is_dir() and killed_tmp != live_tmp
        assert killed_tmp.name.startswith(".out.tmp-") and f"-{killed.pid}-" in killed_tmp.name
        with atomic_directory(target) as tmp:
            (tmp / "done.txt").write_text("whole")
        assert not killed_tmp.exists()
        assert (live_tmp / "part.txt").read_text() == "half"
        assert [p.name for p in target.iterdir()] == ["done.txt"]
    finally:
        live.kill()
        live.wait()
    atomic_write_json(tmp_path / "state.json", {"step": 1})
    assert live_tmp.exists()
    with atomic_directory(target):
        pass
    assert not live_tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "state.json"]
    assert read_json(tmp_path / "state.json") == {"step": 1}


def test_a_failed_write_leaves_the_previous_output_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    try:
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_output_replaced_by_a_writer_killed_between_its_renames_is_put_back(tmp_path):
    target = tmp_path / "out"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    backup = tmp_path / f".out.old-{socket.gethostname()}-{gone.stdout.strip()}-0123abcd"
    backup.mkdir()
    (backup / "a.txt").write_text("previous")
    remove_stale_temporaries(target)
    assert (target / "a.txt").read_text() == "previous" and not backup.exists()
    backup.mkdir()
    remove_stale_temporaries(target)  # with the output in place, a leftover is deleted
    assert not backup.exists() and (target / "a.txt").read_text() == "previous"


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from align3gr.io import atomic_directory
rename = os.replace
def replace_then_die(source, destination):
    rename(source, destination)
    if ".old-" in str(destination):  # the previous output is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "meta.json").write_text('{"fingerprint": "new"}')
"""


def test_a_writer_killed_between_its_renames_leaves_its_new_output_to_the_next_run(tmp_path):
    """The previous output is renamed aside only once the new folder is whole, so the stage's next run finds the new
    output current (published then) instead of redoing the work; another dead writer's unfinished folder goes."""
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "meta.json").write_text('{"fingerprint": "previous"}')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(target)], env=env)
    assert killed.returncode == -signal.SIGKILL and not target.exists()
    unfinished, _ = start_writer(target)
    unfinished.send_signal(signal.SIGKILL)
    unfinished.wait()
    assert StageOutput(target).current("new") == {"fingerprint": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_writer_killed_between_its_renames_is_paired_with_its_own_temporary_not_a_reused_pids(tmp_path):
    """Two dead writers of one host and PID (the PID reused): the one killed between its renames left `old` and its
    whole `tmp` under one owner; the other's unfinished `tmp` is never published in its place."""
    target = tmp_path / "out"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}-{gone.stdout.strip()}"
    for name, text in (("tmp-{}-0000aaaa", "unfinished"), ("tmp-{}-ffffbbbb", "new"), ("old-{}-ffffbbbb", "previous")):
        folder = tmp_path / f".out.{name.format(owner)}"
        folder.mkdir()
        (folder / "a.txt").write_text(text)
    remove_stale_temporaries(target)
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_make_folders_fsyncs_each_new_folder_into_its_parent(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(io_module, "fsync_folder", synced.append)
    make_folders(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    make_folders(tmp_path / "a" / "b")
    assert len(synced) == 3


def test_read_json_names_the_file_and_line_of_unreadable_input(tmp_path):
    path = tmp_path / "table.json"
    path.write_bytes(b'{\n"a": 1,\n"b": "caf\xe9"\n}\n')
    with pytest.raises(DataError, match=r"table\.json:3: not UTF-8 text \(byte 0xe9\)"):
        read_json(path)
    path.write_text('{"a": "\\ud800"}')
    with pytest.raises(DataError, match=r"table\.json: malformed JSON \(a lone surrogate"):
        read_json(path)
    path.write_text('{"a": ' + "1" * 5000 + "}")
    with pytest.raises(DataError, match=r"table\.json: malformed JSON \(Exceeds the limit"):
        read_json(path)


def test_read_json_of_deeply_nested_json_is_a_data_error_or_its_value(tmp_path):
    """Nesting past what `json` parses is a DataError naming the file (no RecursionError); nesting it parses is read,
    though a recursive walk of the value would pass Python's recursion limit."""
    path = tmp_path / "table.json"
    path.write_text("[" * 100_000)
    with pytest.raises(DataError, match=r"table\.json: malformed JSON \(maximum recursion depth exceeded"):
        read_json(path)
    path.write_text("[" * 500 + '"x"' + "]" * 500)
    value = read_json(path)
    for _ in range(500):
        (value,) = value
    assert value == "x"


def test_a_resumed_stage_starts_from_its_last_complete_checkpoint(tmp_path):
    """A kill during a checkpoint save leaves `checkpoint-N` without the trainer state the Trainer writes last, or
    with a cut one; a resumed run takes the newest complete one and ignores folders that are not checkpoints."""
    output = StageOutput(tmp_path / "sft")
    assert output.resume("fp") is None
    for step, state in ((4, "{}"), (12, '{"global_step": 12}'), (16, None), (20, '{"global_st'), (24, "")):
        (output.work / f"checkpoint-{step}").mkdir()
        if state is not None:
            (output.work / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (output.work / "checkpoint-12.bak").mkdir()
    assert output.resume("fp") == str(output.work / "checkpoint-12")
    assert output.resume("other") is None and not (output.work / "checkpoint-12").exists()


def test_a_stage_output_path_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes\.txt: the output path is a file"):
        StageOutput(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_stage_output_folder_of_other_files_is_refused_and_its_own_output_is_replaceable(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert StageOutput(folder, holds="meta.json").path == folder  # empty: nothing to lose
    (folder / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match=r"out: the output folder holds files but no meta\.json"):
        StageOutput(folder, holds="meta.json")
    StageOutput(folder)  # no signature: the stage checks with `claim`
    (folder / "meta.json").write_text("{}")
    StageOutput(folder, holds="meta.json")
    assert (folder / "thesis.tex").read_text() == "keep me"


def test_a_work_folder_left_by_a_run_killed_after_publishing_goes_once_its_output_is_current(tmp_path):
    """Killed between the publish rename and deleting `OUT.work`, a run leaves its checkpoints: the next run finds the
    output current and deletes them; a work folder of another fingerprint (a run to resume) is kept."""
    output = StageOutput(tmp_path / "sft")
    output.resume("fp")
    (output.work / "checkpoint-4").mkdir()
    (output.work / "checkpoint-4" / "trainer_state.json").write_text("{}")
    with atomic_directory(output.path) as folder:  # the publish, killed before its `rmtree(self.work)`
        (folder / "meta.json").write_text('{"fingerprint": "fp"}')
    assert output.current("fp") == {"fingerprint": "fp"} and not output.work.exists()

    output.resume("other")
    assert output.current("fp") is not None and (output.work / "fingerprint").read_text() == "other"
    assert output.claim("fp", False, "model", "inputs") is not None and output.work.exists()
    output.resume("fp")
    assert output.claim("fp", False, "model", "inputs") is not None and not output.work.exists()


def test_atomic_write_bytes_replaces_a_file_whole(tmp_path):
    target = tmp_path / "ladder.png"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["ladder.png"]


def test_a_target_that_is_a_symbolic_link_is_written_where_it_points(tmp_path):
    """Run folders whose outputs are links to another disk: the new output replaces the old one there, the link
    stays a link, and neither folder keeps a temporary or replaced sibling."""
    disk, run = tmp_path / "bigdisk", tmp_path / "run"
    (disk / "sft").mkdir(parents=True)
    (disk / "sft" / "old.txt").write_text("old")
    run.mkdir()
    (run / "sft").symlink_to(disk / "sft", target_is_directory=True)
    with atomic_directory(run / "sft") as tmp:
        (tmp / "new.txt").write_text("new")
    assert (run / "sft").is_symlink() and sorted(p.name for p in (run / "sft").iterdir()) == ["new.txt"]
    assert sorted(p.name for p in disk.iterdir()) == ["sft"] and sorted(p.name for p in run.iterdir()) == ["sft"]


def _aged(path: Path, data: bytes, age_s: float = 60.0) -> Path:
    """`path` holding `data`, with a modification time `age_s` in the past (old enough to be remembered)."""
    path.write_bytes(data)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_remembered_sha256_is_kept_by_size_and_mtime_and_redone_after_a_rewrite(tmp_path, monkeypatch):
    """The digest store answers while the file's size, mtime and inode hold (another process reads it, not the
    file); a rewrite of the same size, a malformed store, or a file modified just now is hashed again."""
    monkeypatch.setenv("ALIGN3GR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(io_module, "_DIGESTS", {})
    weights = _aged(tmp_path / "w.bin", b"a" * 1000)
    assert remembered_sha256(weights) == hashlib.sha256(b"a" * 1000).hexdigest()
    store_path = tmp_path / "cache" / "sha256.json"
    store = read_json(store_path)
    assert list(store) == [str(weights.resolve())]
    store[str(weights.resolve())][3] = "f" * 64  # what the store says is what a new process answers
    atomic_write_json(store_path, store)
    monkeypatch.setattr(io_module, "_DIGESTS", {})
    assert remembered_sha256(weights) == "f" * 64
    _aged(weights, b"b" * 1000, age_s=30.0)  # fine-tuned in place: same size, newer mtime
    assert remembered_sha256(weights) == hashlib.sha256(b"b" * 1000).hexdigest()
    store_path.write_text("{not json")
    monkeypatch.setattr(io_module, "_DIGESTS", {})
    assert remembered_sha256(weights) == hashlib.sha256(b"b" * 1000).hexdigest()
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"c")
    assert remembered_sha256(fresh) == hashlib.sha256(b"c").hexdigest()
    assert str(fresh.resolve()) not in read_json(store_path)


def test_remembered_sha256_without_a_writable_cache_still_hashes(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("ALIGN3GR_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(io_module, "_DIGESTS", {})
    weights = _aged(tmp_path / "w.bin", b"a")
    assert remembered_sha256(weights) == hashlib.sha256(b"a").hexdigest()


def test_siblings_named_like_temporaries_without_an_owner_are_the_users(tmp_path):
    """`.ds.old-jan` and `.ds.tmp-notes` beside an output `ds` are not align3gr's (no HOST-PID-RANDOM owner): a write of
    `ds` neither deletes them nor puts one back in place of a missing `ds`."""
    for name in (".ds.old-jan", ".ds.tmp-notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("keep")
    remove_stale_temporaries(tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    with atomic_directory(tmp_path / "ds") as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.old-jan", ".ds.tmp-notes", "ds"]
    assert (tmp_path / ".ds.old-jan" / "mine.txt").read_text() == "keep"


def test_a_users_folder_named_like_the_work_folder_is_kept(tmp_path):
    """`notes.work` beside an output `notes` is the user's unless it holds a run's fingerprint marker: publishing
    leaves it, and a training stage's resume stops with its name instead of deleting it."""
    work = tmp_path / "notes.work"
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    output = StageOutput(tmp_path / "notes")
    output.publish(lambda folder: (folder / "meta.json").write_text("{}"))
    assert (work / "mine.txt").read_text() == "keep"
    with pytest.raises(DataError, match=r"notes\.work: this folder beside the output has no fingerprint file"):
        output.resume("abc")
    assert (work / "mine.txt").read_text() == "keep"
    (work / "mine.txt").unlink()
    assert output.resume("abc") is None and (work / "fingerprint").read_text() == "abc"
    output.publish(lambda folder: (folder / "meta.json").write_text("{}"))
    assert not work.exists()


def test_an_output_folder_that_is_or_holds_an_input_is_refused(tmp_path):
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    check_apart(tmp_path / "run" / "sft", {"--data": data, "--model": "tiny", "--scid": None})  # apart: fine
    check_apart(data / "inside", {"--data": data})  # an output inside an input replaces nothing of it
    with pytest.raises(ConfigError, match=r"the output folder .*data is --data .*data, which the output would replace"):
        check_apart(data, {"--data": data})
    with pytest.raises(ConfigError, match=r"the output folder .*run holds --data"):
        check_apart(tmp_path / "run" / ".", {"--data": data})


@pytest.mark.parametrize(
    ("files", "holds", "lacks"),
    [
        (["meta.json", "sequences.jsonl"], "meta.json", NOT_A_MODEL),
        (["meta.json", "item_codes.json", "align3gr.json"], "meta.json", NOT_A_MODEL),
        (["meta.json", "item_codes.json", "model.safetensors"], "item_codes.json", NOT_CODE_TABLES),
        (["metrics.json", "meta.json", "align3gr.json"], "metrics.json", NOT_AN_EVALUATION),
    ],
    ids=["sft into a dataset", "sft into a push", "tokenize into sft", "evaluate into a push"],
)
def test_another_stages_output_holding_the_same_signature_file_is_refused(tmp_path, files, holds, lacks):
    folder = tmp_path / "out"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    with pytest.raises(ConfigError, match="so it is another stage's output"):
        StageOutput(folder, holds=holds, lacks=lacks)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)


def test_an_output_under_a_file_is_named_not_a_traceback(tmp_path):
    """`--run-dir` naming a file, or an `--out` whose parent is one: a DataError naming it, nothing created."""
    (tmp_path / "afile").write_text("")
    for target in (tmp_path / "afile", tmp_path / "afile" / "data"):
        with pytest.raises(DataError, match=r"afile: expected a folder here, found a file or a broken link"):
            make_folders(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(DataError, match=r"dangling: expected a folder here"):
        make_folders(tmp_path / "dangling" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dangling"]
