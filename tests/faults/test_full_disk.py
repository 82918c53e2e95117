"""A full disk mid-sampling: step 01 on a small tmpfs, filled once the engine has written its first row. The error
names the path and the space; no half row or half file is left; the rerun after freeing space resumes and finishes.

    .venv/bin/python -m pytest tests/faults/test_full_disk.py -m slow      # needs root to mount the tmpfs
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_harness import Kill, finish, leftovers, rows_in, run_until

pytestmark = pytest.mark.slow

TINY = {"n_train": 8, "k": 2, "max_new_tokens": 64}  # step 01 alone, on the smoke profile: 16 short rows
OVERRIDES = [arg for key, value in TINY.items() for arg in ("-p", f"{key}={value}")]

SAMPLES = "samples/base_train.jsonl"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own, or a skip saying why none can be mounted here."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (a CI container may not have it)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(path: Path, leave: int) -> None:
    """Write zeros into `path` until the disk is full, then give `leave` bytes back."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (2**20, 2**12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
        f.truncate(f.tell() - leave)


def test_a_full_disk_mid_sampling_is_named_leaves_only_whole_rows_and_the_rerun_resumes(
    small_disk: Path,
) -> None:
    run_dir, filler = small_disk / "run", small_disk / "filler"
    rows = TINY["n_train"] * TINY["k"]
    # Once the first row is in, the disk is filled to the last byte: the sample file's page has room for about 8
    # more rows, so the draw is cut mid-way, by a row that finds no room or by papermill saving the notebook
    # (it saves the running cell's output every 30 s), whichever writes first.
    first_row = Kill("01", "sampling", rows_in(SAMPLES, 1))
    outcome = run_until(run_dir, first_row, OVERRIDES, lambda _: fill(filler, leave=0))
    assert outcome.fired and outcome.returncode == 1, outcome.output[-3000:]
    error = outcome.output[outcome.output.rfind("error:") :]
    assert "No space left on the disk of" in error and str(run_dir) in error, error
    assert "is free" in error and "rerun" in error, error
    print(f"\nthe full disk, as the pipeline said it: {error.strip()}")

    raw = (run_dir / SAMPLES).read_bytes()
    assert raw.endswith(b"\n"), "a half row is left at the end of the sample file"
    before = [json.loads(line) for line in raw.splitlines()]
    assert 1 <= len(before) < rows, f"{len(before)} rows: the disk did not fill mid-sampling"
    assert leftovers(run_dir) == []
    json.loads((run_dir / "config.json").read_text())
    for notebook in (run_dir / "executed").glob("*.ipynb"):
        json.loads(notebook.read_text())  # absent, or whole

    filler.unlink()
    finish(run_dir, OVERRIDES, "01")
    after = [json.loads(line) for line in (run_dir / SAMPLES).read_text().splitlines()]
    assert len(after) == rows and after[: len(before)] == before
    assert len({(r["problem_id"], r["sample_idx"]) for r in after}) == rows
