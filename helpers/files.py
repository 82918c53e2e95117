"""Atomic file writes and JSON-lines files: a crash never leaves half a file behind.

Nothing here knows about runs, models or samples; `runs` and `sampling` build on it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a sibling temporary file, then rename it over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
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
