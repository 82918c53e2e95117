"""Every checker against hand labels: `.venv/bin/python -m pytest -s tests/unit/test_labelled.py` prints the
confusion counts (`bench/checkers.py` prints them too, with the judge when one is configured).

`tests/fixtures/labelled_completions.jsonl`: real completions, each read by two graders independently of any
checker and labelled by whether the final answer the text commits to equals the gold (rules:
`tests/fixtures/LABELLING.md`). Every row records the rule that decided it; an ambiguous row says in `note` how it
was decided, and a row where the graders differed says so (`graders: split`) with the decision.
Goals: lenient agrees with the labels on at least 98 % of rows; strict never calls a wrong answer right (it may
miss unformatted right answers by design). lm-eval's readings are measured for comparison, without a goal.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import agreement, answers

LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "labelled_completions.jsonl"
RULES = {"marked", "conclusion", "conflicting", "heading", "no-answer", "not-a-number"}


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    return agreement.read_labelled(LABELS)


@pytest.fixture(scope="module")
def table(labelled: pd.DataFrame) -> pd.DataFrame:
    found = agreement.confusion(labelled)
    print(f"\n{len(labelled)} hand-labelled completions ({int(labelled['label'].sum())} right):\n{found}")
    return found


def _misread(labelled: pd.DataFrame, checker: str) -> str:
    wrong = labelled[labelled["label"] != labelled[f"{checker}_correct"]]
    return "\n".join(
        f"{r.id}: gold {r.gold}, label {r.label}, reads {r[f'pred_{checker}']}" for _, r in wrong.iterrows()
    )


def test_the_set_is_large_real_and_mixed(labelled: pd.DataFrame) -> None:
    assert len(labelled) >= 300 and labelled["id"].is_unique
    assert set(labelled["source"]) == {"calibration", "smoke"}
    assert labelled.loc[labelled["source"] == "smoke", "variant"].nunique() >= 5  # several trained variants
    assert 50 <= labelled["label"].sum() <= len(labelled) - 50  # both kinds, many of each
    assert set(labelled["rule"]) <= RULES and {"conflicting", "no-answer", "heading"} <= set(labelled["rule"])


def test_each_label_follows_from_the_answer_read(labelled: pd.DataFrame) -> None:
    for row in labelled.itertuples():
        if row.answer_read is None:
            assert not row.label and row.rule in {"no-answer", "conflicting", "heading"}, row.id
        elif answers.normalize_number(row.answer_read) is not None:
            assert row.label == answers.is_correct(row.answer_read, row.gold), row.id
        else:
            assert not row.label and row.rule == "not-a-number", row.id  # a ratio, a percentage, a word


def test_ambiguous_rows_say_how_they_were_decided(labelled: pd.DataFrame) -> None:
    ambiguous = labelled[
        labelled["rule"].isin({"conflicting", "heading", "not-a-number", "no-answer"})
        | (labelled["graders"] == "split")
    ]
    assert len(ambiguous) > 0 and (ambiguous["note"].str.len() > 10).all()
    assert (labelled.loc[labelled["graders"] == "split", "note"].str.contains("graders split")).all()


def test_lenient_agrees_with_the_labels_on_98_percent(labelled: pd.DataFrame, table: pd.DataFrame) -> None:
    assert table.loc["lenient", "agreement"] >= 0.98, _misread(labelled, "lenient")


def test_strict_never_calls_a_wrong_answer_right(labelled: pd.DataFrame, table: pd.DataFrame) -> None:
    assert table.loc["strict", "false_pos"] == 0, _misread(labelled[~labelled["label"]], "strict")
    assert table.loc["strict", "true_pos"] > 0


def test_every_reading_is_measured(table: pd.DataFrame) -> None:
    assert list(table.index) == ["strict", "lenient", "lmeval_strict", "lmeval_flexible"]
    assert (table[["true_pos", "false_pos", "false_neg", "true_neg"]].sum(axis=1) == table["n"]).all()


def test_the_checkers_page_shows_the_measured_table(table: pd.DataFrame) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "checkers.md").read_text()
    for checker, row in table.iterrows():
        counts = f"| {checker} | {row.true_pos:.0f} | {row.false_pos:.0f} | {row.false_neg:.0f} | {row.agreement:.3f} |"
        assert counts in page, f"docs/checkers.md's table is stale for {checker}: expected a row {counts}"
