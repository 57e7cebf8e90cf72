"""File helpers shared by every stage: atomic outputs, JSON Lines with line-numbered errors, hashing."""

from __future__ import annotations

import ast
import contextlib
import glob
import gzip
import hashlib
import io
import json
import json.encoder
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import orjson

from align3gr.errors import DataError

_READ_CALLBACK: ContextVar[Callable[[int], None] | None] = ContextVar("align3gr_read_callback", default=None)


@contextlib.contextmanager
def reporting_reads(callback: Callable[[int], None]) -> Iterator[None]:
    """While active, the files `open_binary` and `open_text` open report the bytes of each read from disk to
    `callback` (the compressed bytes of a `.gz`), so a reader's progress is measured against the files' sizes."""
    token = _READ_CALLBACK.set(callback)
    try:
        yield
    finally:
        _READ_CALLBACK.reset(token)


class _ReportingFile(io.FileIO):
    """A file opened for reading whose reads report their byte counts to a callback."""

    def __init__(self, path: Path, callback: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self._callback = callback

    def readinto(self, buffer: Any) -> int | None:
        count = super().readinto(buffer)
        if count:
            self._callback(count)
        return count

    def readall(self) -> bytes:
        data = super().readall()
        if data:
            self._callback(len(data))
        return data


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes (its reads reported under `reporting_reads`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    callback = _READ_CALLBACK.get()
    return open(path, "rb") if callback is None else io.BufferedReader(_ReportingFile(path, callback))


GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def open_text(path: str | Path, errors: str = "strict") -> Iterator[IO[str]]:
    """Read a UTF-8 text file, transparently decompressing gzip (`.gz`, or any file starting with gzip's magic bytes,
    which no UTF-8 text does), its reads reported under `reporting_reads`; `errors` as in `open`. A byte order mark at
    the start of the file (Windows tools write one) is skipped."""
    with open_binary(path) as raw:
        gzipped = Path(path).suffix == ".gz" or raw.peek(2)[:2] == GZIP_MAGIC  # a .json saved gzipped reads as well
        binary = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        with io.TextIOWrapper(binary, encoding="utf-8-sig", errors=errors) as handle:
            yield handle


def iter_json_lines(path: str | Path, allow_python_literals: bool = False) -> Iterator[tuple[int, dict]]:
    """Stream `(line_number, object)` from a JSON Lines file (optionally gzipped).

    With `allow_python_literals`, lines written as Python dict literals (Amazon 2014 metadata) are
    accepted too. Blank lines are skipped; anything else that is not an object is an error.
    """
    with open_text(path) as handle:
        for number, line in numbered_lines(handle, path):
            if line.isspace():
                continue
            yield number, parse_json_object(line, path, number, allow_python_literals)


_UNREADABLE = (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error)
"""What reading an `open_text` file raises on bytes that are not UTF-8 or on a corrupt or cut-off `.gz`."""


def numbered_lines(handle: IO[str], path: str | Path) -> Iterator[tuple[int, str]]:
    """`enumerate(handle, start=1)` of an `open_text` file, its unreadable bytes raised as a DataError that names the
    line holding them."""
    number, lines = 0, iter(handle)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except _UNREADABLE as err:
            raise unreadable(err, path, number + 1) from None
        number += 1
        yield number, line


def unreadable(err: Exception, path: str | Path, reached: int) -> DataError:
    """The DataError of an `_UNREADABLE` error met while reading `path` at line `reached` or later: text decodes a
    block ahead of the lines handed out, so the line of a byte that is not UTF-8 is found by reading again."""
    if isinstance(err, UnicodeDecodeError):
        return DataError(f"not UTF-8 text (byte 0x{err.object[err.start]:02x})", path, _undecodable_line(path))
    return DataError(f"corrupt or cut-off gzip file ({err})", path, reached)


def _undecodable_line(path: str | Path) -> int | None:
    """The first line of `path` holding a byte that is not UTF-8, counted as `open_text` counts lines."""
    with open_text(path, errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                return number
    return None


def parse_json_object(text: str, path: str | Path, line: int, allow_python_literals: bool = False) -> dict:
    """Parse one JSON object (or Python dict literal when allowed), raising a located DataError.

    orjson parses first (several times faster); a line it rejects goes through `json` and then `ast`, so what
    only those accept (NaN, integers beyond 64 bits, lone surrogates, Python literals) and every error message are
    as they were."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _parse_slow(text, path, line, allow_python_literals)
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}{_lines_hint(text)}", path, line)
    return value


def _lines_hint(text: str) -> str:
    """What an error adds for a line that opens a JSON array: the file is one document, not JSON Lines."""
    return " (one JSON object per line is expected: JSON Lines, not a JSON array)" if text.lstrip()[:1] == "[" else ""


def _parse_slow(text: str, path: str | Path, line: int, allow_python_literals: bool) -> object:
    """The standard library's parse of a line orjson rejected, with the located errors of malformed lines."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # a JSONDecodeError, an integer past Python's digit limit, deep nesting
        if not allow_python_literals:
            raise DataError(f"malformed JSON ({_json_error(err)}){_lines_hint(text)}", path, line) from None
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError("malformed line: neither JSON nor a Python dict literal", path, line) from None
    if _holds_lone_surrogate(value):
        raise DataError("malformed JSON (a lone surrogate escape such as \\ud800 is not a character)", path, line)
    return value


def read_json_object(path: str | Path) -> dict:
    """`read_json` of a file that must hold a JSON object (a settings or a table file)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}", path)
    return value


def _json_error(err: ValueError | RecursionError) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at column {err.colno}"
    return str(err)


def _holds_lone_surrogate(value: object) -> bool:
    """Whether a parsed value holds a string that is not valid Unicode (`json` accepts lone surrogate escapes, which
    no UTF-8 file can hold). Walked with a stack, not by recursion: `json` parses values nested deeper than Python's
    recursion limit lets a recursive walk go."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            pending += value.keys()
            pending += value.values()
        elif isinstance(value, list | tuple):
            pending += value
    return False


def _jsonl_encoder() -> Callable[[Any], str]:
    """`json.dumps(row, ensure_ascii=False, separators=(", ", ": "))` as a function for one file's rows, its C encoder
    built once (that `json.dumps` call builds an encoder per row, a third of the cost of a short row)."""
    options = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
    if json.encoder.c_make_encoder is None:
        return options.encode
    encode = json.encoder.c_make_encoder(
        {}, options.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
    return lambda row: "".join(encode(row, 0))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON Lines (UTF-8, stable key order as given); returns the row count."""
    count = 0
    encode = _jsonl_encoder()
    with open(path, "w", encoding="utf-8") as handle:
        write = handle.write
        for row in rows:
            write(encode(row) + "\n")
            count += 1
    return count


def write_json(path: str | Path, value: Any) -> None:
    """Write one JSON document, indented and with sorted-as-given keys, ending with a newline."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a small file through a temporary sibling, fsynced before the rename (and the folder after it), so
    readers never see it half-written and a crash never leaves it empty."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(owned_name(path, "tmp"))
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`text` as UTF-8, atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


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


def cache_root() -> Path:
    """The folder of the caches runs share: `$ALIGN3GR_CACHE`, else `~/.cache/align3gr`."""
    return Path(os.environ.get("ALIGN3GR_CACHE") or Path.home() / ".cache" / "align3gr")


_DIGESTS: dict[tuple, str] = {}
_TRUSTED_AGE_NS = 2_000_000_000


def remembered_sha256(path: str | Path) -> str:
    """`sha256_file` of a large file (model weights, raw data), remembered in `cache_root()/sha256.json` by resolved
    path, size, modification time and inode, so a later command re-reads the file only when one of them changed. A
    file modified less than 2 s before it was hashed is not remembered: a rewrite within the timestamp's granularity
    could keep all four."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _DIGESTS:
        return _DIGESTS[key]
    store_path = cache_root() / "sha256.json"
    store = _read_digest_store(store_path)
    entry = store.get(key[0])
    if isinstance(entry, list) and len(entry) == 4 and tuple(entry[:3]) == key[1:] and isinstance(entry[3], str):
        _DIGESTS[key] = entry[3]
        return entry[3]
    started = time.time_ns()
    digest = sha256_file(path)
    if path.stat().st_mtime_ns == stat.st_mtime_ns and started - stat.st_mtime_ns > _TRUSTED_AGE_NS:
        _DIGESTS[key] = digest
        store = {name: entry for name, entry in store.items() if os.path.exists(name)}
        store[key[0]] = [*key[1:], digest]
        with contextlib.suppress(OSError):
            store_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(store_path, store)
    return digest


def _read_digest_store(path: Path) -> dict[str, list]:
    """The digest store (`remembered_sha256`); empty when missing or unreadable, as a cache miss."""
    try:
        store = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return store if isinstance(store, dict) else {}


def sha256_json(value: Any) -> str:
    """Hex sha256 of a JSON-serialisable value in canonical form (sorted keys), for fingerprints."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success its files are fsynced and it is renamed to
    `target`. No partial output is ever visible under `target`, even after a crash. A new `target` appears in one
    rename; an existing one is replaced in two, with a gap between them: it is first renamed aside (`owned_name`
    `old`, deleted after), so a reader may briefly find `target` absent while it is replaced. The aside rename comes
    after the new folder is whole, so a writer killed between the two renames leaves a whole new output, which the
    next write of `target` publishes (`remove_stale_temporaries`) before it writes.

    On an exception the temporary folder is removed; after a kill it is left under a name carrying its owner
    (`owned_name`), which a later write of `target` deletes once that process is gone (`remove_stale_temporaries`).
    A `target` that is a symbolic link (a run's outputs kept on another disk) is written where it points: the link
    stays, and the output stays on that disk.
    """
    target = Path(target)
    if target.is_symlink():
        target = target.resolve()
    make_folders(target.parent)
    remove_stale_temporaries(target)
    token = secrets.token_hex(4)
    tmp = target.with_name(owned_name(target, "tmp", token))
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            backup = target.with_name(owned_name(target, "old", token))
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_folder(target.parent)


def owned_name(target: Path, kind: str, token: str | None = None) -> str:
    """`.NAME.KIND-HOST-PID-RANDOM`: a temporary (`tmp`) or replaced (`old`) sibling of `target`, named by the host and
    process that made it; one write's `tmp` and `old` share their RANDOM `token`, which pairs them after a kill."""
    return f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}-{token or secrets.token_hex(4)}"


def make_folders(folder: Path) -> None:
    """`folder.mkdir(parents=True, exist_ok=True)`, each folder it creates fsynced into its parent, so an output
    published under new folders survives a power loss along with them."""
    missing = []
    while not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise DataError("expected a folder here, found a file or a broken link; name another output folder", folder)
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_folder(new.parent)


OWNER = re.compile(r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}")
"""The `HOST-PID-RANDOM` end of an `owned_name`."""


def owner_alive(owner: str) -> bool:
    """Whether the process named by an `owned_name`'s `HOST-PID-RANDOM` may still be writing (`process_alive`)."""
    match = OWNER.fullmatch(owner)
    return match is not None and process_alive(match["host"], int(match["pid"]))


def process_alive(host: str, pid: int) -> bool:
    """Whether process `pid` of `host` may be running: a live PID on this host, or any of another host (which this
    one cannot see)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> None:
    """Delete the temporary and replaced siblings of `target` (`owned_name`) left by a process that was killed: those
    whose owner is gone. A live process's (a concurrent writer of the same output) are kept; a dead PID the system
    has given to a new process keeps its leftovers until that one exits too. A writer killed between the two renames
    of `atomic_directory` leaves no `target`, the previous output as `old` and the whole new one as its `tmp` (the
    same owner): the new one is published (the previous one deleted); an `old` without its own `tmp` is put back,
    whatever other dead writers, of a reused PID, left."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    stale = {kind: _stale_siblings(target, kind) for kind in ("tmp", "old")}
    if stale["old"] and not target.exists() and not target.is_symlink():
        owner, backup = next(iter(stale["old"].items()))
        os.replace(stale["tmp"].pop(owner, backup), target)
    for path in (*stale["tmp"].values(), *stale["old"].values()):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _stale_siblings(target: Path, kind: str) -> dict[str, Path]:
    """The `kind` siblings of `target` (`owned_name`) whose owner is gone, by their `HOST-PID-RANDOM` owner. A sibling
    whose name ends otherwise (the user's `.data.old-2024`) is not align3gr's: left alone."""
    prefix = f".{target.name}.{kind}-"
    found = {path.name[len(prefix) :]: path for path in target.parent.glob(glob.escape(prefix) + "*")}
    return {owner: path for owner, path in sorted(found.items()) if OWNER.fullmatch(owner) and not owner_alive(owner)}


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (what a rename is about to publish)."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        fsync_folder(Path(root))


def fsync_folder(folder: Path) -> None:
    """fsync a folder's entries (a rename into it, or a file created in it)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_json(path: str | Path) -> Any:
    """Parse a whole JSON document, raising a DataError with the file, line and column on malformed JSON."""
    with open_text(path) as handle:
        try:
            text = handle.read()
        except _UNREADABLE as err:
            raise unreadable(err, path, 1) from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than `json` can parse
        raise DataError(f"malformed JSON ({_json_error(err)})", path, getattr(err, "lineno", None)) from None
    if _holds_lone_surrogate(value):
        raise DataError("malformed JSON (a lone surrogate escape such as \\ud800 is not a character)", path)
    return value
