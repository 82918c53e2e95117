"""pass@k, maj_half@k, maj_vote@k, bootstrap and the summary table: `pytest tests/unit/test_metrics.py`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import metrics


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (8, 0, 1, 0.0),  # nothing correct
        (8, 8, 1, 1.0),  # everything correct
        (8, 2, 1, 0.25),  # pass@1 is the fraction correct
        (8, 1, 8, 1.0),  # at k = n any correct sample counts
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (8, 6, 3, 1.0),  # fewer than k wrong samples: some draw must hit
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_vectorized_over_counts() -> None:
    out = metrics.pass_at_k(4, np.array([0, 1, 4]), 2)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_pass_at_k_is_stable_for_large_n() -> None:
    value = metrics.pass_at_k(10_000, 3, 100)
    assert 0 < value < 1
    assert value == pytest.approx(1 - np.prod([1 - 100 / i for i in range(9998, 10001)]))


@pytest.mark.parametrize(("n", "c", "k"), [(8, 1, 0), (8, 1, 9), (8, 9, 1), (8, -1, 1)])
def test_pass_at_k_rejects_impossible_inputs(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k"):
        metrics.pass_at_k(n, c, k)


def test_maj_half_at_k_needs_more_than_half() -> None:
    assert metrics.maj_half_at_k([5, 4, 8, 0], 8) == 0.5  # 5 of 8 counts, 4 of 8 does not
    assert metrics.maj_half_at_k([3, 2], 4) == 0.5  # 3 of 4 counts, 2 of 4 does not
    with pytest.raises(ValueError, match="maj_half_at_k"):
        metrics.maj_half_at_k([], 8)


def test_majority_answer_ties_and_none() -> None:
    assert metrics.majority_answer(["4", "3", "3", "4"]) == "4"  # tie: first seen wins
    assert metrics.majority_answer([None, None, None, "2"]) == "2"  # None never wins
    assert metrics.majority_answer([None, None]) is None


def test_maj_vote_at_k_is_majority_vote_accuracy() -> None:
    preds = [["72", "72", "70"], ["1", "2", "2"], [None, None, None]]
    assert metrics.maj_vote_at_k(preds, ["72", "1", "5"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="maj_vote_at_k"):
        metrics.maj_vote_at_k([], [])


def test_the_two_maj_at_k_differ_where_the_right_answer_wins_without_a_majority() -> None:
    # 3 of 8 right, every wrong answer different: the right answer is the most common (maj_vote) but is not
    # right in more than half of the samples (maj_half)
    preds = [["7", "7", "7", "1", "2", "3", "4", "5"]]
    assert metrics.maj_vote_at_k(preds, ["7"]) == 1.0 and metrics.maj_half_at_k([3], 8) == 0.0
    assert metrics.MAJ_HALF.format(k=8) == "maj_half@8" and metrics.MAJ_VOTE.format(k=8) == "maj_vote@8"


def test_bootstrap_ci_contains_the_mean_and_is_seeded() -> None:
    values = np.r_[np.ones(30), np.zeros(70)]
    low, high = metrics.bootstrap_ci(values, n_boot=500, seed=1)
    assert low < 0.3 < high and low > 0.15 and high < 0.45
    assert metrics.bootstrap_ci(values, n_boot=500, seed=1) == (low, high)
    assert metrics.bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_paired_bootstrap_diff() -> None:
    a, b = np.r_[np.ones(50), np.zeros(50)], np.zeros(100)
    mean, low, high = metrics.paired_bootstrap_diff(a, b, n_boot=500)
    assert mean == 0.5 and low < 0.5 < high and low > 0
    with pytest.raises(ValueError, match="pair the same"):
        metrics.paired_bootstrap_diff(a, b[:10])


def _graded(
    variant: str, per_problem: list[list[tuple[str | None, str | None]]], golds: list[str]
) -> pd.DataFrame:
    """Rows of graded samples from (strict pred, lenient pred) pairs per problem."""
    rows = []
    for pid, (samples, gold) in enumerate(zip(per_problem, golds, strict=True)):
        for idx, (ps, pl) in enumerate(samples):
            rows.append(
                {
                    "variant": variant,
                    "problem_id": f"p{pid}",
                    "sample_idx": idx,
                    "gold": gold,
                    "pred_strict": ps,
                    "pred_lenient": pl,
                    "has_format": ps is not None,
                    "strict_correct": ps == gold,
                    "lenient_correct": pl == gold,
                    "n_tokens": 10 * (idx + 1),
                }
            )
    return pd.DataFrame(rows)


def test_summarize_gives_hand_computed_numbers() -> None:
    # problem 0: strict 1 of 4 right, lenient 3 of 4; problem 1: strict 0, lenient 1 (wrong majority "8")
    graded = _graded(
        "SFT_1",
        [
            [("1", "1"), (None, "1"), (None, "1"), ("2", "2")],
            [(None, "8"), (None, "8"), (None, "5"), (None, "9")],
        ],
        ["1", "5"],
    )
    table = metrics.summarize(graded, n_boot=200).set_index("checker")
    strict, lenient = table.loc["strict"], table.loc["lenient"]
    assert (strict["n_problems"], strict["n_samples"]) == (2, 8)
    assert strict["pass@1"] == pytest.approx((1 / 4 + 0) / 2)
    assert strict["pass@4"] == pytest.approx(0.5)
    assert strict["pass@2"] == pytest.approx((0.5 + 0) / 2)  # 1 - C(3,2)/C(4,2) = 0.5 for problem 0
    assert strict["maj_half@4"] == 0.0
    assert strict["maj_vote@4"] == 0.5  # strict votes: "1" (tie with "2", first seen), None
    assert lenient["pass@1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert lenient["maj_half@4"] == 0.5  # problem 0 has 3 of 4
    assert lenient["maj_vote@4"] == 0.5  # "1" wins problem 0; "8" loses problem 1
    assert lenient["maj_vote@4_lo"] <= 0.5 <= lenient["maj_vote@4_hi"]  # both maj@k have intervals
    assert strict["format_rate"] == pytest.approx(2 / 8)
    assert strict["mean_tokens"] == pytest.approx(25.0)
    assert strict["pass@1_lo"] <= strict["pass@1"] <= strict["pass@1_hi"]


def test_summarize_keeps_variants_apart() -> None:
    a = _graded("base", [[("1", "1"), ("2", "2")]], ["1"])
    b = _graded("GRPO", [[("1", "1"), ("1", "1")]], ["1"])
    table = metrics.summarize(pd.concat([a, b]), n_boot=50)
    assert list(zip(table["variant"], table["checker"], strict=False)) == [
        ("base", "strict"),
        ("base", "lenient"),
        ("GRPO", "strict"),
        ("GRPO", "lenient"),
    ]
    assert table.set_index(["variant", "checker"]).loc[("GRPO", "strict"), "maj_half@2"] == 1.0


def test_summarize_names_missing_columns_and_uneven_samples() -> None:
    with pytest.raises(ValueError, match="lack columns.*gold"):
        metrics.summarize(pd.DataFrame({"variant": ["x"], "problem_id": ["p"]}))
    uneven = _graded("x", [[("1", "1")], [("1", "1"), ("1", "1")]], ["1", "1"])
    with pytest.raises(ValueError, match="different sample counts"):
        metrics.summarize(uneven)


def test_per_problem_rejects_unknown_and_absent_checkers() -> None:
    with pytest.raises(ValueError, match="Unknown checker 'exact'"):
        metrics.per_problem(_graded("x", [[("1", "1")]], ["1"]), "exact")
    with pytest.raises(ValueError, match="No judge_correct column"):
        metrics.per_problem(_graded("x", [[("1", "1")]], ["1"]), "judge")


def test_judge_verdicts_become_a_third_checker_without_a_vote() -> None:
    graded = _graded("x", [[("1", "1"), ("2", "2")], [("3", "3"), ("3", "3")]], ["1", "3"])
    graded["judge_correct"] = [True, True, False, True]
    table = metrics.summarize(graded, n_boot=20).set_index("checker")
    assert list(table.index) == ["strict", "lenient", "judge"]
    assert table.loc["judge", "pass@1"] == 0.75 and table.loc["judge", "maj_half@2"] == 0.5
    assert table.loc["judge", "pass@2"] == 1.0 and pd.isna(table.loc["judge", "maj_vote@2"])
    assert pd.isna(table.loc["judge", "maj_vote@2_lo"]) and table.loc["lenient", "maj_vote@2_lo"] >= 0


def test_per_problem_scores_average_to_the_summary() -> None:
    graded = _graded("x", [[("1", "1"), ("2", "2"), ("1", "1")], [("3", "3")] * 3], ["1", "4"])
    scores = metrics.per_problem_scores(graded, "lenient")
    assert list(scores.columns) == ["pass@1", "pass@3", "maj_half@3", "maj_vote@3"]
    assert scores["pass@1"].tolist() == pytest.approx([2 / 3, 0.0])
    assert scores["maj_half@3"].tolist() == [1.0, 0.0] and scores["maj_vote@3"].tolist() == [1.0, 0.0]
    row = metrics.summarize(graded, n_boot=20).set_index("checker").loc["lenient"]
    assert row["pass@1"] == pytest.approx(scores["pass@1"].mean())
    assert (
        row["maj_half@3"] == scores["maj_half@3"].mean() and row["maj_vote@3"] == scores["maj_vote@3"].mean()
    )


def test_the_wilson_interval_of_a_share_never_collapses() -> None:
    assert metrics.wilson_interval(0, 16)[0] == 0.0 and 0.19 < metrics.wilson_interval(0, 16)[1] < 0.2
    assert metrics.wilson_interval(0, 200)[1] < 0.02 < metrics.wilson_interval(4, 200)[1]
    low, high = metrics.wilson_interval(8, 16)
    assert low == pytest.approx(1 - high) and low < 0.5 < high
    assert metrics.wilson_interval(16, 16) == (pytest.approx(1 - metrics.wilson_interval(0, 16)[1]), 1.0)
    with pytest.raises(ValueError, match="3 of 2"):
        metrics.wilson_interval(3, 2)
