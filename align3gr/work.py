"""Work folders of training stages: checkpoints of one exact run, so a killed stage resumes where it stopped."""

from __future__ import annotations

import shutil
from pathlib import Path


def prepare_work(work: Path, fingerprint: str) -> str | None:
    """The checkpoint to resume from when `work` holds one of this exact run (same fingerprint); otherwise `work`
    starts empty, marked with the fingerprint."""
    marker = work / "fingerprint"
    if marker.is_file() and marker.read_text() == fingerprint:
        checkpoints = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return str(checkpoints[-1]) if checkpoints else None
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    marker.write_text(fingerprint)
    return None
