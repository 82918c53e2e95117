"""The benchmarks run and end with their figure: `pytest tests/unit/test_bench.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_grading_bench_prints_completions_per_second() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "grading.py")], capture_output=True, text=True, check=True
    ).stdout
    last = out.strip().splitlines()[-1]
    assert last.startswith("completions/s: ")
    assert float(last.split(": ")[1].replace(",", "")) > 0
    assert "with marker: 312, strict correct: 7" in out  # the calibration scan's counts
