"""Rejection filtering into SFT rows and ORPO pairs: `pytest tests/unit/test_filtering.py`."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import data, filtering, sampling

QUESTIONS = {"p1": "What is 3+4?", "p2": "What is 2*5?", "p3": "What is 9-1?"}
GOLDS = {"p1": "7", "p2": "10", "p3": "8"}


def graded(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["problem_id", "sample_idx", "completion"])
    return sampling.grade_samples(frame, GOLDS)


SAMPLES = graded(
    [
        ("p1", 0, "3+4=7\n#### 7"),  # correct, formatted
        ("p1", 1, "3+4=7\n#### 7"),  # duplicate of sample 0
        ("p1", 2, "it is 7"),  # correct only leniently
        ("p1", 3, "#### 8"),  # wrong
        ("p2", 0, "#### 10"),  # p2: all correct, no ORPO pair possible
        ("p2", 1, "2*5 = 10"),
        ("p3", 0, "#### 9"),  # p3: all wrong, no SFT row possible
        ("p3", 1, "I think 10"),
    ]
)


def test_sft_rows_are_distinct_correct_samples() -> None:
    rows = filtering.build_sft_rows(SAMPLES, QUESTIONS, "lenient", max_per_problem=4)
    assert [(r["problem_id"], r["sample_idx"]) for r in rows] == [("p1", 0), ("p1", 2), ("p2", 0), ("p2", 1)]
    assert rows[0]["prompt"] == data.build_messages(QUESTIONS["p1"])
    assert rows[0]["completion"] == [{"role": "assistant", "content": "3+4=7\n#### 7"}]


def test_strict_filter_keeps_only_formatted_answers_and_caps_per_problem() -> None:
    rows = filtering.build_sft_rows(SAMPLES, QUESTIONS, "strict", max_per_problem=1)
    assert [(r["problem_id"], r["sample_idx"]) for r in rows] == [("p1", 0), ("p2", 0)]


def test_orpo_pairs_pair_a_correct_with_an_incorrect_of_the_same_problem() -> None:
    pairs = filtering.build_orpo_pairs(SAMPLES, QUESTIONS, "lenient", max_per_problem=4)
    assert [(p["problem_id"], p["chosen_idx"], p["rejected_idx"]) for p in pairs] == [("p1", 0, 3)]
    strict_pairs = filtering.build_orpo_pairs(SAMPLES, QUESTIONS, "strict", max_per_problem=4)
    # strict: p1 has correct {0} and incorrect {2, 3}; p2 has correct {0} and incorrect {1}: each wrong used once
    assert [(p["problem_id"], p["chosen_idx"], p["rejected_idx"]) for p in strict_pairs] == [
        ("p1", 0, 2),
        ("p1", 0, 3),
        ("p2", 0, 1),
    ]
    for pair in strict_pairs:
        assert pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"


def test_filter_stats_counts_both_checkers() -> None:
    stats = filtering.filter_stats(SAMPLES)
    assert stats.loc["lenient", "correct_samples"] == 5 and stats.loc["strict", "correct_samples"] == 3
    assert stats.loc["lenient", "problems_with_a_correct"] == 2
    assert stats.loc["lenient", "problems_all_correct"] == 1
    assert stats.loc["strict", "with_####_line"] == 5


def test_nothing_correct_stops_with_the_counts() -> None:
    wrong = SAMPLES[SAMPLES["problem_id"] == "p3"]
    with pytest.raises(
        filtering.NothingToTrainOn, match="0 of 2 samples \\(1 problems\\).*lenient-correct: 0"
    ):
        filtering.require_training_data(wrong, "lenient", "samples/base_train.jsonl")
    filtering.require_training_data(SAMPLES, "strict", "x")  # some are correct: no error


def test_missing_columns_and_unknown_checker_are_named() -> None:
    with pytest.raises(ValueError, match="lack columns \\['lenient_correct'\\]"):
        filtering.build_sft_rows(SAMPLES.drop(columns="lenient_correct"), QUESTIONS)
    with pytest.raises(ValueError, match="Unknown checker 'judge'"):
        filtering.build_orpo_pairs(SAMPLES, QUESTIONS, "judge")


def test_training_sets_are_written_per_round(tmp_path) -> None:
    sft_rows, pairs = filtering.training_sets(SAMPLES, QUESTIONS, "lenient", 4, "samples/x.jsonl")
    assert sft_rows == filtering.build_sft_rows(SAMPLES, QUESTIONS, "lenient", 4)
    assert pairs == filtering.build_orpo_pairs(SAMPLES, QUESTIONS, "lenient", 4)
    sft_path, orpo_path = filtering.write_training_sets(tmp_path, "round2", sft_rows, pairs)
    assert (sft_path.name, orpo_path.name) == ("sft_round2.jsonl", "orpo_round2.jsonl")
    assert len(sft_path.read_text().splitlines()) == len(sft_rows)
    wrong = SAMPLES.assign(lenient_correct=False)
    with pytest.raises(filtering.NothingToTrainOn, match="in samples/x.jsonl"):
        filtering.training_sets(wrong, QUESTIONS, "lenient", 4, "samples/x.jsonl")
