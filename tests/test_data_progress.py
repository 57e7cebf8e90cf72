"""`data build`'s progress: every byte the builders read is reported, the bar shows on a terminal only, and a build
with the bar writes the same files as one without."""

from __future__ import annotations

import gzip
import json
import os
import pty
import subprocess
import sys
import termios
from pathlib import Path

from test_builder_amazon import write_2018
from tqdm import tqdm

from align3gr.cli import main
from align3gr.io import iter_json_lines, read_json, reporting_reads
from data_builders.movielens import read_rows

ROOT = Path(__file__).resolve().parent.parent


def test_reads_report_every_byte_of_plain_gzipped_and_delimited_files(tmp_path):
    rows = [{"user": f"U{i}", "text": "é" * i} for i in range(2000)]
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(lines.read_bytes()))
    document = tmp_path / "rows.json"
    document.write_text(json.dumps(rows), encoding="utf-8")
    table = tmp_path / "u.data"
    table.write_text("".join(f"{i}\t{i % 7}\t4\t{1000 + i}\n" for i in range(3000)))
    reads = {
        lines: lambda: [row for _, row in iter_json_lines(lines)],
        packed: lambda: [row for _, row in iter_json_lines(packed)],
        document: lambda: read_json(document),
        table: lambda: list(read_rows(table, "\t", 4)),
    }
    for path, read in reads.items():
        counts: list[int] = []
        with reporting_reads(counts.append):
            content = read()
        assert sum(counts) == path.stat().st_size, path.name
        assert content == read(), path.name  # the same content read without reporting
    assert [row for _, row in iter_json_lines(packed)] == rows


def read_terminal(terminal: int) -> bytes:
    """Everything written to a pseudo-terminal until its other side is closed."""
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child side is closed
            return shown
        if not chunk:
            return shown
        shown += chunk


def test_the_bar_shows_on_a_terminal_only_and_the_files_are_the_same(tmp_path, capsys):
    source = write_2018(tmp_path / "raw")
    command = ["data", "build", "--builder", "amazon", "--source", str(source), "--out"]
    assert main([*command, str(tmp_path / "piped")]) == 0
    assert "reading amazon files" not in capsys.readouterr().err  # not a terminal: no bar

    terminal, child_side = pty.openpty()
    termios.tcsetwinsize(child_side, (24, 120))  # a new pseudo-terminal is 0 columns wide: tqdm would draw nothing
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    arguments = [sys.executable, "-m", "align3gr.cli", *command, str(tmp_path / "tty")]
    process = subprocess.Popen(arguments, stderr=child_side, stdout=subprocess.DEVNULL, env=env)
    os.close(child_side)
    shown = read_terminal(terminal)
    os.close(terminal)
    assert process.wait() == 0, shown.decode()
    size = tqdm.format_sizeof(sum(p.stat().st_size for p in source.iterdir()))  # both raw files, e.g. "7.81k"
    assert b"reading amazon files: 100%" in shown and f"| {size}/{size} [".encode() in shown

    piped = sorted(p.relative_to(tmp_path / "piped") for p in (tmp_path / "piped").rglob("*"))
    assert piped == sorted(p.relative_to(tmp_path / "tty") for p in (tmp_path / "tty").rglob("*"))
    for name in piped:
        assert (tmp_path / "piped" / name).read_bytes() == (tmp_path / "tty" / name).read_bytes(), name
