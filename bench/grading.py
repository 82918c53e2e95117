"""Grading throughput: every reading (strict, lenient, lm-eval's two) of real ~200-token completions, per second.

Run: `.venv/bin/python bench/grading.py`. The corpus is the 960 SmolLM2-135M completions of the calibration
scan (tests/fixtures), a realistic mix: a third carry a `####` marker, most end in prose with numbers.
Goal on a 2-core machine: >= 20,000 completions/s. The last line is the figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from helpers import answers

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "smollm2_completions.jsonl"
ROUNDS = 20


def main() -> None:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    pairs = [(r["completion"], r["gold"]) for r in rows]
    grades = [answers.grade(text, gold) for text, gold in pairs]  # warm-up, and the counts below
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for text, gold in pairs:
            answers.grade(text, gold)
    elapsed = time.perf_counter() - start
    chars = sum(len(t) for t, _ in pairs) / len(pairs)
    print(f"corpus: {len(pairs)} completions, mean {chars:.0f} characters")
    print(
        f"with marker: {sum(g.has_format for g in grades)}, strict correct: {sum(g.strict_correct for g in grades)}, "
        f"lenient correct: {sum(g.lenient_correct for g in grades)}"
    )
    print(f"graded {ROUNDS * len(pairs)} completions in {elapsed:.3f} s")
    print(f"completions/s: {ROUNDS * len(pairs) / elapsed:,.0f}")


if __name__ == "__main__":
    main()
