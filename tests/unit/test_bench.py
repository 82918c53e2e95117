"""The benchmarks run and end with their figure: `pytest tests/unit/test_bench.py`."""

from __future__ import annotations

import os
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
    assert (
        "with marker: 312, strict correct: 6" in out
    )  # the scan counted 7 by the last marker: see test_answers


def test_checkers_bench_prints_each_checkers_confusion_counts() -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("JUDGE_")
    }  # the judge is measured elsewhere
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "checkers.py"), "--show", "strict"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert "LLM judge skipped" in out and "labelled completions: 532" in out
    for checker in ("strict", "lenient", "lmeval_strict", "lmeval_flexible"):
        assert out.count(f"\n{checker} ") == 2  # all rows and the hard rows
    assert "=== strict: " in out and "rows against the label ===" in out
