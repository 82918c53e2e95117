"""Checker agreement tables and examples: `.venv/bin/python -m pytest tests/unit/test_agreement.py`."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import agreement, answers

# (variant, gold, completion): real shapes of disagreement between the checkers
SAMPLES = [
    ("base", "9", "The answer is 3 * 3 = 9 packs paid."),  # lenient and flexible right, strict readers wrong
    ("base", "7", "So 7 apples.\n#### 7"),  # every checker right
    ("base", "4", "It is 2 + 2 = 4.\n####4"),  # lm-eval's strict-match needs the space: only it is wrong
    ("base", "5", "No idea."),  # every checker wrong
    ("SFT_1", "18", "It is 18.00 dollars."),  # lenient right, lm-eval's exact match says "18.00" != "18"
    ("SFT_1", "3", "#### 3"),  # every checker right
]


@pytest.fixture
def graded() -> pd.DataFrame:
    rows = []
    for i, (variant, gold, text) in enumerate(SAMPLES):
        grade = answers.grade(text, gold)
        rows.append(
            {"variant": variant, "problem_id": f"p{i}", "sample_idx": 0, "gold": gold, "completion": text}
            | grade.__dict__
        )
    return pd.DataFrame(rows)


def test_disagreements_count_each_pair_per_variant(graded: pd.DataFrame) -> None:
    table = agreement.disagreements(graded).set_index(["variant", "pair"])
    assert len(table) == 2 * 6  # two variants, four checkers: six pairs
    assert table.loc[("base", "strict vs lenient")].tolist() == [4, 1, 0, 1]
    assert table.loc[("base", "strict vs lmeval_strict")].tolist() == [4, 1, 1, 0]
    assert table.loc[("base", "lenient vs lmeval_flexible")].tolist() == [4, 0, 0, 0]
    assert table.loc[("SFT_1", "lenient vs lmeval_flexible")].tolist() == [2, 1, 1, 0]


def test_the_judge_joins_the_pairs_when_it_ran(graded: pd.DataFrame) -> None:
    table = agreement.disagreements(graded.assign(judge_correct=True))
    assert "lenient vs judge" in set(table["pair"]) and len(table) == 2 * 10


def test_samples_without_variants_form_one_group(graded: pd.DataFrame) -> None:
    table = agreement.disagreements(graded.drop(columns="variant"))
    assert set(table["variant"]) == {agreement.ALL} and (table["n_samples"] == len(SAMPLES)).all()


def test_one_checker_is_not_enough_to_compare(graded: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="Need two checkers' verdicts"):
        agreement.disagreements(graded[["variant", "strict_correct"]])


def test_table_puts_pairs_down_and_variants_across(graded: pd.DataFrame) -> None:
    wide = agreement.table(agreement.disagreements(graded))
    assert list(wide.columns) == ["base", "SFT_1"] and wide.index[0] == "strict vs lenient"
    assert wide.loc["strict vs lenient", "base"] == "1 (0/1)"


def test_examples_are_disagreeing_samples_in_full_seeded_and_never_shown_twice(graded: pd.DataFrame) -> None:
    picked = agreement.examples(graded, per_pair=5, seed=3)
    assert set(picked) == {
        "strict vs lenient",
        "strict vs lmeval_strict",
        "strict vs lmeval_flexible",
        "lenient vs lmeval_strict",
        "lenient vs lmeval_flexible",
        "lmeval_strict vs lmeval_flexible",
    }
    shown = [i for drawn, _ in picked.values() for i in drawn.index]
    assert len(shown) == len(set(shown))  # a sample drawn for one pair is not drawn again for the next
    for pair, (drawn, total) in picked.items():
        first, second = pair.split(" vs ")
        assert (drawn[f"{first}_correct"] != drawn[f"{second}_correct"]).all()
        assert total == (graded[f"{first}_correct"] != graded[f"{second}_correct"]).sum()
    again = agreement.examples(graded, per_pair=5, seed=3)
    assert {k: v[0].index.tolist() for k, v in picked.items()} == {
        k: v[0].index.tolist() for k, v in again.items()
    }
    text = agreement.examples_text(graded)
    assert "The answer is 3 * 3 = 9 packs paid." in text and "lenient reads 9 (right)" in text
    assert "strict reads nothing (wrong)" in text and "base, problem p0, sample 0, gold 9" in text
    assert "strict vs lmeval_flexible: 1 sample(s) graded differently, all shown above" in text


def test_examples_show_the_judge_verdict_and_fence_the_text(graded: pd.DataFrame) -> None:
    graded = graded.assign(judge_correct=False)
    graded.loc[0, "completion"] = "~~~~ odd fence ~~~~ The answer is 3 * 3 = 9."
    markdown = agreement.examples_markdown(graded, per_pair=1)
    assert "### lenient vs judge" in markdown and "judge wrong" in markdown
    assert "`````text\n~~~~ odd fence" in markdown


def test_agreeing_checkers_say_so(graded: pd.DataFrame) -> None:
    same = graded[graded["problem_id"].isin(["p1", "p3"])]
    assert agreement.examples(same) == {}
    assert agreement.examples_text(same) == "The checkers agree on every sample."
