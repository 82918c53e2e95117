"""Atomic file writes and JSON-lines files: a crash never leaves half a file behind; reading, a malformed file
raises `BadInput` naming the file and the line.

Nothing here knows about runs, models or samples; `runs` and `sampling` build on it.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left; over the disk quota


class DiskFull(OSError):
    """A write found no space: the message names the path, the space it needs and what to do."""


def raise_if_full(err: OSError, path: str | os.PathLike, needed: int | None, at_least: bool = False) -> None:
    """Raise `DiskFull` for `path` if `err` is a full disk or quota; return otherwise (the caller re-raises).

    Args:
        needed: bytes the write needs (`at_least`: the bytes it had written when the disk filled).
    """
    if err.errno not in FULL:
        return
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    need = f"{'at least' if at_least else 'about'} {_size(needed)}" if needed else "more space"
    raise DiskFull(
        err.errno,
        f"No space left on the disk of {path}: writing it needs {need}, {_size(shutil.disk_usage(where).free)} is "
        "free. Free some space there (or use a run directory on another disk), then rerun: finished steps are "
        "skipped, sampling resumes where it stopped and nothing written before is lost.",
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run files private to their writer
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
