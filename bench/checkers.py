"""Every checker against the hand-labelled completions: the confusion table, and the rows each checker gets wrong.

Run: `.venv/bin/python bench/checkers.py [--show lenient,strict]`. With `JUDGE_BASE_URL` and `JUDGE_MODEL` set
(a hosted judge, or `python -m helpers.judge_server --model ...` on this machine) the judge is measured too;
its verdicts are cached in `outputs/bench/judge_labelled.jsonl`. The set and its labelling rules:
`tests/fixtures/labelled_completions.jsonl` and `tests/fixtures/LABELLING.md`. `hard` rows are those whose
text contains the gold number somewhere, where a careless reading is most often wrong.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd

from helpers import agreement, judge

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "fixtures" / "labelled_completions.jsonl"
JUDGE_CACHE = ROOT / "outputs" / "bench" / "judge_labelled.jsonl"


def gold_in_text(frame: pd.DataFrame) -> pd.Series:
    """Rows whose completion writes the gold number somewhere (as a whole number)."""
    return pd.Series(
        [
            re.search(rf"(?<![\d.]){re.escape(g)}(?![\d])", t) is not None
            for g, t in zip(frame["gold"], frame["completion"], strict=True)
        ],
        index=frame.index,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--show", default="", help="comma-separated checkers whose wrong rows to print in full"
    )
    args = parser.parse_args()
    frame = agreement.read_labelled(LABELS)
    if judge.configured():
        started = time.perf_counter()
        questions = dict(zip(frame["problem_id"], frame["question"], strict=False))
        frame["judge_correct"] = judge.judge_samples(frame, questions, JUDGE_CACHE)
        print(
            f"{judge.status()}: {len(frame)} verdicts in {time.perf_counter() - started:.1f} s (cached ones free)"
        )
    else:
        print(judge.status())
    hard = gold_in_text(frame)
    print(
        f"labelled completions: {len(frame)} ({int(frame['label'].sum())} right), sources: "
        + ", ".join(f"{k} {v}" for k, v in frame.groupby(["source", "variant"]).size().items())
    )
    print("\nall rows:\n" + agreement.confusion(frame).round(3).to_string())
    print(
        f"\nhard rows (gold number in the text, {int(hard.sum())}):\n"
        + agreement.confusion(frame[hard]).round(3).to_string()
    )
    for checker in filter(None, args.show.split(",")):
        wrong = frame[frame["label"] != frame[f"{checker}_correct"]]
        print(f"\n=== {checker}: {len(wrong)} rows against the label ===")
        for _, row in wrong.iterrows():
            read = row.get(f"pred_{checker}", "-")
            print(
                f"--- {row['id']} gold {row['gold']}, label {row['label']} (read {row['answer_read']}, "
                f"{row['rule']}), {checker} reads {read}\n{row['completion']}\nnote: {row['note']}"
            )


if __name__ == "__main__":
    main()
