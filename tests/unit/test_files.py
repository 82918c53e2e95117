"""Atomic writes and JSON lines: `pytest tests/unit/test_files.py`."""

from __future__ import annotations

import errno
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


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_named_with_the_space_needed_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = files.atomic_write_text(tmp_path / "f.txt", "old")
    assert path.stat().st_mode & 0o777 == files.FILE_MODE  # as open() would make it, not mkstemp's 0600
    monkeypatch.setattr(files.os, "replace", no_space)
    with pytest.raises(files.DiskFull) as err:
        files.atomic_write_text(path, "x" * 3000)
    assert f"No space left on the disk of {path}: writing it needs about 2.9 KiB" in str(err.value)
    assert "is free" in str(err.value) and "rerun" in str(err.value)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_other_write_errors_are_left_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(PermissionError):
        files.atomic_write_text(tmp_path / "f.txt", "new")


def test_a_sample_row_cut_by_a_full_disk_is_removed(tmp_path: Path) -> None:
    from helpers import sampling

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n')

    class FillsUp:
        """A file on a disk with 5 bytes left: the write is short, as os.write is on a full disk."""

        def __init__(self, f):
            self.f = f

        def tell(self) -> int:
            return self.f.tell()

        def write(self, data: bytes) -> int:
            return self.f.write(data[:5])

        def truncate(self, size: int) -> int:
            return self.f.truncate(size)

    with (
        open(path, "ab", buffering=0) as f,
        pytest.raises(files.DiskFull, match="writing it needs about 17 bytes"),
    ):
        sampling._append_row(FillsUp(f), path, b'{"a": 2, "b": 3}\n', rows_left=1)
    assert path.read_bytes() == b'{"a": 1}\n'


def test_a_library_error_is_a_full_disk_only_when_the_disk_is_full(tmp_path: Path) -> None:
    files.raise_if_full(RuntimeError("PytorchStreamWriter failed: file write failed"), tmp_path / "x", None)
    with pytest.raises(files.DiskFull, match="writing it needs more space"):
        files.raise_if_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path / "x", None)


def test_the_temporaries_of_cut_off_writes_are_swept_and_nothing_else(tmp_path: Path) -> None:
    cut = [
        tmp_path / ".config.json-ab_12cd3",
        tmp_path / "models" / ".SFT_1-k2j4h5g6",
        tmp_path / "models" / ".SFT_1.old",
    ]
    kept = [tmp_path / ".writer.json", tmp_path / "config.json", tmp_path / "executed" / ".ipynb_checkpoints"]
    for path in cut[1:] + kept[2:]:
        path.mkdir(parents=True)
    (cut[1] / "adapter_model.safetensors").write_text("half")
    for path in cut[:1] + kept[:2]:
        path.write_text("{}")
    assert sorted(files.sweep_temporaries(tmp_path)) == sorted(cut)
    assert [p.exists() for p in cut + kept] == [False] * 3 + [True] * 3
