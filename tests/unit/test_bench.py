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


def _training_bench():
    """bench/training.py as a module: its top level imports nothing heavy (torch and trl load in its children)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "bench" / "training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_bench_calls_bf16_losses_sound_only_without_drift_from_fp32() -> None:
    bench = _training_bench()
    fp32 = [2.0, 1.8, 1.6, 1.4]
    assert bench.verdict(fp32, [2.01, 1.81, 1.59, 1.41], compare=True).startswith("sound")  # rounding alone
    lagging = [2.0, 1.95, 1.8, 1.6]  # same at step 1, then learns less: 11 % of the mean loss behind
    assert bench.verdict(fp32, lagging, compare=True).startswith("unsound: +10.8 % of fp32's mean loss")
    broken = bench.verdict(fp32, [2.0, float("nan"), 1.6, 1.4], compare=True)
    assert broken.startswith("unsound (a loss is not finite)")
    grpo = bench.verdict([0.0, 0.1], [0.3, -0.2], compare=False)  # its samples differ: only checked finite
    assert grpo.startswith("sound (finite")
    assert bench.mean_after_first([9.0, 2.0, 4.0]) == 3.0  # the first step is warm-up
