"""What the pipeline remembers between runs: per stage output, the key it was made with and a digest of its files.

A stage is up to date when its recorded key (a hash of its options and its inputs' digests) equals the key it
would be run with now and its folder still holds the files recorded. Digests hash file contents; a file's size
and modification time let an unchanged folder skip the re-hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from align3gr.io import atomic_write_json, read_json, sha256_file


def _signature(folder: Path) -> list[list]:
    """`[relative path, size, mtime_ns]` of every file under `folder`, sorted."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        rows.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


def folder_digest(folder: Path, recorded: dict | None = None) -> dict | None:
    """`{"digest", "signature"}` of `folder` (None if absent): the recorded digest when the signature is unchanged,
    otherwise sha256 over every file's path and content."""
    if not folder.is_dir():
        return None
    signature = _signature(folder)
    if recorded is not None and recorded.get("signature") == signature:
        return {"digest": recorded["digest"], "signature": signature}
    digest = hashlib.sha256()
    for relative, _, _ in signature:
        digest.update(f"{relative}\0{sha256_file(folder / relative)}\n".encode())
    return {"digest": digest.hexdigest(), "signature": signature}


class PipelineState:
    """`pipeline_state.json` of a run folder: `{output path relative to the run: record}`, saved after each stage
    (written to a temporary file and renamed, so a kill never leaves it half-written)."""

    FILE = "pipeline_state.json"

    def __init__(self, run_dir: Path):
        self.path = run_dir / self.FILE
        self.records: dict[str, dict] = read_json(self.path) if self.path.is_file() else {}

    def get(self, name: str) -> dict | None:
        return self.records.get(name)

    def record(self, name: str, value: dict) -> None:
        self.records[name] = value
        atomic_write_json(self.path, self.records)

    def forget(self, name: str) -> None:
        """Drop the record of `name` (saved at once): its output is about to be replaced."""
        if self.records.pop(name, None) is not None:
            atomic_write_json(self.path, self.records)
