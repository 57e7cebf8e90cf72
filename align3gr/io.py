"""File helpers shared by every stage: atomic outputs, JSON Lines with line-numbered errors, hashing."""

from __future__ import annotations

import ast
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from align3gr.errors import DataError


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, transparently decompressing `.gz`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_lines(path: str | Path, allow_python_literals: bool = False) -> Iterator[tuple[int, dict]]:
    """Stream `(line_number, object)` from a JSON Lines file (optionally gzipped).

    With `allow_python_literals`, lines written as Python dict literals (Amazon 2014 metadata) are
    accepted too. Blank lines are skipped; anything else that is not an object is an error.
    """
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield number, parse_json_object(line, path, number, allow_python_literals)


def parse_json_object(text: str, path: str | Path, line: int, allow_python_literals: bool = False) -> dict:
    """Parse one JSON object (or Python dict literal when allowed), raising a located DataError."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if not allow_python_literals:
            raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", path, line) from None
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError("malformed line: neither JSON nor a Python dict literal", path, line) from None
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}", path, line)
    return value


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON Lines (UTF-8, stable key order as given); returns the row count."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(", ", ": ")))
            handle.write("\n")
            count += 1
    return count


def write_json(path: str | Path, value: Any) -> None:
    """Write one JSON document, indented and with sorted-as-given keys, ending with a newline."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small file through a temporary sibling and a rename, so readers never see it half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, value: Any) -> None:
    """`write_json`, atomically (`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of a JSON-serialisable value in canonical form (sorted keys), for fingerprints."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target` in one rename.

    On any exception (or a kill), `target` is untouched and the temporary folder is removed (or left
    with a `.tmp-` name that the next run's cleanup deletes), so no half-written output is visible.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(target: str | Path) -> None:
    """Delete temporary folders left beside `target` by an earlier run that was killed."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    """Parse a whole JSON document, raising a DataError with the file, line and column on malformed JSON."""
    with open_text(path) as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", path, err.lineno) from None
