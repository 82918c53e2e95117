"""Atomic writes and JSON lines: `pytest tests/unit/test_files.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import files


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [{"a": 1}, {"b": [1, 2]}]
    path = files.write_jsonl(tmp_path / "x" / "rows.jsonl", rows)
    assert files.read_jsonl(path) == rows


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = files.atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(TypeError):
        files.write_jsonl(path, [{"bad": object()}])
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_repair_tail_cuts_only_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    files.repair_tail(path)
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    files.repair_tail(path)  # a whole file is left alone
    assert files.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    files.repair_tail(tmp_path / "missing.jsonl")  # nothing to repair
