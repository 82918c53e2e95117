"""Rejection filtering: graded samples become SFT rows (correct samples) and ORPO pairs (correct vs incorrect).

Rows are conversational, as TRL expects: `prompt` is the system + user messages, `completion` / `chosen` /
`rejected` the assistant message. Grading lives in `answers`, sampling in `sampling`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from helpers import data
from helpers.answers import CHECKERS
from helpers.files import write_jsonl


class NothingToTrainOn(RuntimeError):
    """No sample was correct: there is no data for SFT or ORPO."""


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _check(graded: pd.DataFrame, checker: str) -> str:
    if checker not in CHECKERS:
        raise ValueError(f"Unknown checker {checker!r}. Choose one of: {', '.join(CHECKERS)}.")
    missing = [c for c in ("problem_id", "sample_idx", "completion", f"{checker}_correct") if c not in graded]
    if missing:
        raise ValueError(f"Graded samples lack columns {missing}; grade them with sampling.grade_samples.")
    return f"{checker}_correct"


def distinct_samples(graded: pd.DataFrame, correct: bool, column: str) -> pd.DataFrame:
    """Samples of one verdict, one per distinct completion text (whitespace-trimmed), in sample order."""
    part = graded[graded[column] == correct].sort_values(["problem_id", "sample_idx"])
    return part.assign(_key=part["completion"].str.strip()).drop_duplicates(["problem_id", "_key"])


def build_sft_rows(
    graded: pd.DataFrame, questions: Mapping[str, str], checker: str = "lenient", max_per_problem: int = 4
) -> list[dict]:
    """Correct samples as prompt-completion rows: deduplicated, at most `max_per_problem` per problem."""
    column = _check(graded, checker)
    kept = distinct_samples(graded, True, column).groupby("problem_id").head(max_per_problem)
    return [
        {
            "problem_id": pid,
            "sample_idx": int(idx),
            "prompt": data.build_messages(questions[pid]),
            "completion": _assistant(text),
        }
        for pid, idx, text in zip(kept["problem_id"], kept["sample_idx"], kept["completion"], strict=True)
    ]


def build_orpo_pairs(
    graded: pd.DataFrame, questions: Mapping[str, str], checker: str = "lenient", max_per_problem: int = 4
) -> list[dict]:
    """Preference pairs of one problem: `chosen` correct, `rejected` incorrect.

    Pairing rule: a problem's distinct incorrect samples, in sample order, are each paired with its distinct
    correct samples in turn (cycling when there are fewer correct ones), up to `max_per_problem` pairs. So
    every incorrect sample is used at most once and every correct one as evenly as possible.
    """
    column = _check(graded, checker)
    good = distinct_samples(graded, True, column).groupby("problem_id")
    bad = distinct_samples(graded, False, column).groupby("problem_id")
    pairs = []
    for pid, chosen in good:
        if pid not in bad.groups:
            continue
        rejected = bad.get_group(pid).head(max_per_problem)
        for i, (r_idx, r_text) in enumerate(zip(rejected["sample_idx"], rejected["completion"], strict=True)):
            c = chosen.iloc[i % len(chosen)]
            pairs.append(
                {
                    "problem_id": pid,
                    "chosen_idx": int(c["sample_idx"]),
                    "rejected_idx": int(r_idx),
                    "prompt": data.build_messages(questions[pid]),
                    "chosen": _assistant(c["completion"]),
                    "rejected": _assistant(r_text),
                }
            )
    return pairs


def summary_line(sft_rows: list[dict], pairs: list[dict]) -> str:
    """How much training data came out, and from how many problems."""
    sft_problems, pair_problems = {r["problem_id"] for r in sft_rows}, {p["problem_id"] for p in pairs}
    return (
        f"{len(sft_rows)} SFT rows from {len(sft_problems)} problems; "
        f"{len(pairs)} ORPO pairs from {len(pair_problems)} problems"
    )


def show_pair(pairs: list[dict], index: int = 0) -> str:
    """One ORPO pair as text: the chosen completion, a rule, the rejected one."""
    if not pairs:
        return "No ORPO pair: no problem has both a correct and an incorrect sample."
    pair = pairs[index]
    return f"CHOSEN\n{pair['chosen'][0]['content']}\n{'-' * 40}\nREJECTED\n{pair['rejected'][0]['content']}"


def filter_stats(graded: pd.DataFrame) -> pd.DataFrame:
    """Counts per checker: samples correct, problems with at least one correct sample, format rate."""
    per_problem = graded.groupby("problem_id")
    rows = []
    for checker in CHECKERS:
        column = f"{checker}_correct"
        rows.append(
            {
                "checker": checker,
                "samples": len(graded),
                "correct_samples": int(graded[column].sum()),
                "problems": per_problem.ngroups,
                "problems_with_a_correct": int(per_problem[column].any().sum()),
                "problems_all_correct": int(per_problem[column].all().sum()),
                "with_####_line": int(graded["has_format"].sum()),
            }
        )
    return pd.DataFrame(rows).set_index("checker")


def pass_rates(graded: pd.DataFrame, checker: str) -> pd.DataFrame:
    """One row per problem: its samples `n`, the right ones `c` under `checker`, and whether the model solves it
    *sometimes* (0 < c < n: its GRPO group would have reward spread, open-r1's pass-rate filter)."""
    column = _check(graded, checker)
    table = graded.groupby("problem_id", sort=False)[column].agg(n="size", c="sum")
    return table.assign(sometimes=(table["c"] > 0) & (table["c"] < table["n"]))


def require_training_data(graded: pd.DataFrame, checker: str, source: str) -> None:
    """Stop with the counts when no sample is correct under `checker`: nothing can be trained on."""
    column = _check(graded, checker)
    if graded[column].any():
        return
    n_problems = graded["problem_id"].nunique()
    raise NothingToTrainOn(
        f"Nothing to train on: 0 of {len(graded)} samples ({n_problems} problems) in {source} are correct under "
        f"the {checker} checker (strict-correct: {int(graded['strict_correct'].sum())}, lenient-correct: "
        f"{int(graded['lenient_correct'].sum())}, with a '####' line: {int(graded['has_format'].sum())}). "
        "The model cannot solve these problems; use an easier data set (profile 'smoke' uses the toy set), "
        "more samples per problem (k), or a stronger model."
    )


def training_sets(
    graded: pd.DataFrame, questions: Mapping[str, str], checker: str, max_per_problem: int, source: str
) -> tuple[list[dict], list[dict]]:
    """SFT rows and ORPO pairs from graded samples; stops with the counts when no sample is correct."""
    require_training_data(graded, checker, source)
    return (
        build_sft_rows(graded, questions, checker, max_per_problem),
        build_orpo_pairs(graded, questions, checker, max_per_problem),
    )


def write_training_sets(
    run_dir: str | os.PathLike, round_name: str, sft_rows: list[dict], pairs: list[dict]
) -> tuple[Path, Path]:
    """Write `datasets/sft_<round>.jsonl` and `datasets/orpo_<round>.jsonl` atomically; returns both paths."""
    datasets_dir = Path(run_dir) / "datasets"
    return (
        write_jsonl(datasets_dir / f"sft_{round_name}.jsonl", sft_rows),
        write_jsonl(datasets_dir / f"orpo_{round_name}.jsonl", pairs),
    )
