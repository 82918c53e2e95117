"""Atomic file writes and JSON-lines files: a crash never leaves half a file behind; reading, a malformed file
raises `BadInput` naming the file and the line.

Nothing here knows about runs, models or samples; `runs` and `sampling` build on it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left; over the disk quota
FULL_MESSAGES = ("No space left", "StorageFull", "Disk quota exceeded", "file write failed")
# The temporaries `atomic_write_text` and `write_dir_atomically` write beside their target (mkstemp's and
# mkdtemp's `.<name>-<8 characters>`, and `.<name>.old`): a kill mid-write leaves them behind.
TEMPORARY = re.compile(r"\..+-[a-z0-9_]{8}|\..+\.old")
# The permissions a plain open() would give a new file (mkstemp's are 0600); the umask is read once, here.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


class DiskFull(OSError):
    """A write found no space: the message names the path, the space it needs and what to do."""


def raise_if_full(
    err: Exception, path: str | os.PathLike, needed: int | None, at_least: bool = False
) -> None:
    """Raise `DiskFull` for `path` if `err` is a full disk or quota; return otherwise (the caller re-raises).

    Args:
        err: an OSError, or a library's own error for one (safetensors: `StorageFull`; torch.save: `file write
            failed`), recognised by its message.
        needed: bytes the write needs (`at_least`: the bytes it had written when the disk filled).
    """
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    said = getattr(err, "errno", None) in FULL
    # a library's message alone could be another failure: only with the disk (nearly) full too
    named = any(m in str(err) for m in FULL_MESSAGES) and free is not None and free < 2**26
    if not (said or named):
        return
    need = f"{'at least' if at_least else 'about'} {_size(needed)}" if needed else "more space"
    raise DiskFull(
        errno.ENOSPC,
        f"No space left on the disk of {path}: writing it needs {need}, "
        f"{'an unknown amount' if free is None else _size(free)} is free. Free some space there (or use a run "
        "directory on another disk), then rerun: finished steps are skipped, sampling resumes where it stopped "
        "and nothing written before is lost.",
    ) from err


def _size(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


class BadInput(ValueError):
    """A file the series reads is malformed: the message names the file, the line or key, and the fix."""


def read_utf8(path: str | os.PathLike, fix: str, error: type[BadInput] = BadInput) -> str:
    """The text of a UTF-8 file; other bytes raise `error` naming the line they are on and `fix`."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise error(
            f"{path}, line {line}, is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}). {fix}"
        ) from None


def parse_json(text: str) -> Any:
    """`json.loads`, except that a key given twice in one object raises ValueError (json keeps the last)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def read_json_object(path: Path, fix: str, holds: str = "an object") -> dict[str, Any]:
    """A JSON file that must hold one object: not UTF-8, not JSON, a key twice or another value raise `BadInput`
    naming `path`, what it should hold and `fix`."""
    text = read_utf8(path, fix)
    try:
        found = parse_json(text)
    except ValueError as err:
        raise BadInput(f"{path} is not valid JSON ({err}). {fix}") from err
    if not isinstance(found, dict):
        raise BadInput(f"{path} holds a JSON {type(found).__name__}, not {holds}. {fix}")
    return found


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        keys = [key for key, _ in pairs]
        raise ValueError(f"key(s) {sorted({k for k in keys if keys.count(k) > 1})} given twice in one object")
    return found


def type_problem(value: Any, kind: type) -> str | None:
    """Why a parsed JSON `value` is not a `kind` ("should be int, got str"), or None. A bool is no number, an int
    does for a float, and a float must be finite (json reads NaN and Infinity)."""
    if kind is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not fits:
        return f"should be {kind.__name__}, got {type(value).__name__}"
    try:
        if kind is float and not math.isfinite(value):
            return "should be a finite number"
    except OverflowError:  # an int past the float range
        return "should be a number in the float range"
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a sibling temporary file, then rename it over `path`: readers never see half a file."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write_text` for bytes (a PNG, say)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with contextlib.suppress(OSError):  # some filesystems (vfat, some network mounts) have no modes
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        raise_if_full(err, path, len(data))
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_dir_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Fill a sibling temporary directory with `write`, then swap it in: a crash never leaves half a dir."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    old = target.with_name(f".{target.name}.old")
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)  # one a kill left would block the rename
            os.replace(target, old)  # renamed aside, not deleted, until the new directory is in place
        os.replace(tmp, target)
    except Exception as err:  # safetensors and torch.save report a full disk in errors of their own
        written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        raise_if_full(err, target, written or None, at_least=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def sweep_temporaries(root: Path) -> list[Path]:
    """Delete, with a warning, the temporaries of writes a kill cut off under `root`. Only its one writer may."""
    found = sorted((p for p in root.rglob(".*") if TEMPORARY.fullmatch(p.name)), key=lambda p: len(p.parts))
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            log.warning("%s: the temporary directory of a write that was cut off, deleted", path)
        elif path.exists():
            path.unlink()
            log.warning("%s: the temporary file of a write that was cut off, deleted", path)
    return found


def write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Rows as JSON lines, written atomically."""
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def repair_tail(path: str | os.PathLike) -> None:
    """Cut a partial last line (a write killed mid-row) off an append-only JSONL file; only its writer calls this."""
    path = Path(path)
    raw = path.read_bytes() if path.exists() else b""
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        log.warning(
            "%s ends in a partial row (%d bytes) from an interrupted run: dropping it", path, len(raw) - cut
        )
        with open(path, "r+b") as f:
            f.truncate(cut)
