"""Answer extraction and grading: `.venv/bin/python -m pytest tests/unit/test_answers.py`."""

from __future__ import annotations

import pytest

from helpers import answers

# (completion, gold, strict prediction, lenient prediction): realistic model outputs.
# The correctness columns follow from the predictions and are checked in `test_grade_table`.
CASES = [
    ("48 / 2 = 24\n48 + 24 = 72\n#### 72", "72", "72", "72"),  # the asked-for format
    ("She earns $10.\n#### $10", "10", "10", "10"),  # dollar sign after the marker
    ("Total is 1,200 pens.\n#### 1,200", "1200", "1200", "1200"),  # thousands comma
    ("So the answer is 18.\n#### 18.", "18", "18", "18"),  # trailing period
    ("#### 18.00", "18", "18", "18"),  # decimals that are integral
    ("#### 1234.50", "1234.5", "1234.5", "1234.5"),  # trailing zero in the decimals
    ("The temperature falls to -8.\n#### -8", "-8", "-8", "-8"),  # negative answer
    ("#### 5\nWait, I made a mistake.\n#### 7", "7", None, "7"),  # markers disagree: strict reads none
    ("#### 72\nSo the answer is 72.\n#### 72.00", "72", "72", "72"),  # markers agree: restated answer
    ("#### 3. First step: 1 + 2 = 3.\n#### 4. Then 11.", "11", None, "11"),  # `####` as section numbers
    ("#### 7\nHmm, actually it should be 9.", "9", "7", "7"),  # number after the marker: strict wins
    ("####72", "72", "72", "72"),  # no space after the marker
    ("####   72 apples", "72", "72", "72"),  # unit word after the number
    ("#### $1,234,567.", "1234567", "1234567", "1234567"),  # dollar, commas and period together
    ("#### -$5", "-5", "-5", "-5"),  # sign before the dollar
    ("#### 0.5", "0.5", "0.5", "0.5"),  # decimal answer
    ("#### .5", "0.5", None, "5"),  # a bare decimal point is not read as a number
    ("#### 3/4", "0.75", "3/4", "3/4"),  # fraction: Math-Verify decides
    ("Half of 48 is 24, plus 48 is 72. The answer is 72.", "72", None, "72"),  # prose only
    ("The final answer is: $72", "72", None, "72"),  # "answer is:" with a dollar
    ("Answer: 72 clips", "72", None, "72"),  # "Answer:" label
    ("The answer is 72. Double-check: 24 + 48 = 72.", "72", None, "72"),  # check after the answer
    ("The answer is 70. Then add 2 more to get 72.", "72", None, "70"),  # phrase beats the last number
    ("So we get \\boxed{72}.", "72", None, "72"),  # LaTeX box
    ("\\boxed{70} hmm, maybe \\boxed{72}", "72", None, "72"),  # last box counts
    ("The result is \\boxed{\\frac{3}{4}}", "0.75", None, "\\frac{3}{4}"),  # LaTeX fraction in a box
    ("#### 72 and \\boxed{70}", "72", "72", "72"),  # marker beats the box
    ("She pays 3 * 4 = 12 dollars.", "12", None, "12"),  # last number in plain text
    ("She had 5 and gave 2, so 3 are left", "3", None, "3"),  # last number, no period
    ("I cannot solve this problem.", "5", None, None),  # no number at all
    ("", "5", None, None),  # empty completion
    ("####", "5", None, None),  # marker without a number, nothing else
    ("#### the answer\nIt is 12.", "12", None, "12"),  # marker without a number: lenient reads on
    ("The answer is 18 apples and 4 pears.", "18", None, "18"),  # number then more text
    ("72 is the answer", "72", None, "72"),  # answer first, phrase after
    ("It costs $2,500.00 in total.", "2500", None, "2500"),  # money with cents in prose
    ("We need 3 + 4 = 7 boxes\n#### 7\n", "7", "7", "7"),  # trailing newline
    ("Step 1: 6*7=42\nStep 2: 42-2=40\n#### 40", "40", "40", "40"),  # step labels hold numbers
    ("#### 40\n\nThe answer is 40.", "40", "40", "40"),  # marker then restated answer
    ("#### 41", "40", "41", "41"),  # formatted but wrong
    ("The answer is 40, I think. #### 39", "40", "39", "39"),  # the marker decides, even when wrong
    ("The answer is -3.", "-3", None, "-3"),  # negative in prose
    ("Result: 1,000,000 people", "1000000", None, "1000000"),  # large number with commas
    ("She has 0 left.\n#### 0", "0", "0", "0"),  # zero
    ("#### 007", "7", "7", "7"),  # leading zeros
    ("ANSWER IS 9", "9", None, "9"),  # upper case phrase
    ("The answer is **72**.", "72", None, "72"),  # markdown bold
    ("The answer is 3 * 3 = 9 packs paid", "3", None, "9"),  # an expression's result, not its first operand
    ("The answer: 10/2 = 5", "5", None, "5"),  # a fraction that is an expression: its result
    ("The answer is 3 * 3.", "3", None, None),  # an expression never evaluated states no number
    ("Russia is 2 times larger. The answer is 2:1.", "2", None, None),  # a ratio is not the number 2
    ("The answer is that she has $1,200 left.", "1200", None, "1200"),  # the number inside the statement
    ("The answer is 12 because 3 * 5 = 15.", "12", None, "12"),  # a stated number beats a later `=`
    ("The answer is:\n\n45 apples", "45", None, "45"),  # the statement on the next line
    ("The answer is as follows. She has 5 + 2 = 7 apples.", "7", None, "7"),  # a statement with no number
    (
        "The answer is 3. So, 9 bags * 3 = 27. So there are 27 in total.",
        "27",
        None,
        "27",
    ),  # a later conclusion
    ("So, 2 * 2 = 4.\n\nThis is the", "4", None, None),  # cut off mid-sentence: 4 is working, not an answer
    ("First 15 / 3 = 5 apples. Then, to find the", "5", None, None),  # cut off in a sentence without a number
    ("Ben's share is 6/3 = 2. So, 2(", "2", None, None),  # cut off inside an expression: 2 is an operand
    ("So she has 5 apples. Hope this helps!", "5", None, "5"),  # a finished remark after the result
    ("So the total is **72**", "72", None, "72"),  # bold closes with `**`: not an unfinished product
    ("#### 6*9 = 54, Lea has 54 shells left.", "54", "54", "54"),  # a marker line's result, not its operand
    ("#### 3 * 4", "3", None, "4"),  # a marker line that never states a result gives strict nothing
    ("The answer is 2 bags x 6 eggs = 12 eggs.", "12", None, "12"),  # unit words between the operands
    ("In total she has:\n- 7 apples", "7", None, "7"),  # a bullet's dash is no minus sign
    ("The answer isn't 5, it's 7.", "7", None, "7"),  # a negated statement states nothing
    ("Answer:\nShe buys 3 packs of 4 = 12 pens.\nShe keeps 12 - 5 = 7.", "7", None, "7"),  # "Answer:" heading
    ("The answer is 15. Therefore, step 2 was correct.", "15", None, "15"),  # a remark is not a result
    ("The answer is $\\frac{3}{4}$.", "0.75", None, "3/4"),  # LaTeX fraction: its value, not its numerator
    ("\\boxed{} so she has 5", "5", None, "5"),  # an empty box states nothing
]


@pytest.mark.parametrize(("text", "gold", "strict", "lenient"), CASES)
def test_extractors_read_realistic_outputs(
    text: str, gold: str, strict: str | None, lenient: str | None
) -> None:
    assert answers.extract_strict(text) == strict
    assert answers.extract_lenient(text) == lenient


@pytest.mark.parametrize(("text", "gold", "strict", "lenient"), CASES)
def test_grade_table(text: str, gold: str, strict: str | None, lenient: str | None) -> None:
    g = answers.grade(text, gold)
    assert (g.pred_strict, g.pred_lenient) == (strict, lenient)
    assert g.has_format == ("####" in text)
    assert g.strict_correct == answers.is_correct(strict, gold)
    assert g.lenient_correct == answers.is_correct(lenient, gold)


LMEVAL_CASES = [
    # (completion, gold, strict-match reading, flexible-extract reading, strict-match right, flexible right)
    ("So 7 apples.\n#### 7", "7", "7", "7", True, True),  # the asked-for format
    ("#### 1,200.\n#### 7", "1200", "1200", "7", True, False),  # strict-match takes the *first* marker
    ("####7", "7", None, "7", False, True),  # strict-match needs the space after `####`
    ("It is 18.00 dollars", "18", None, "18.00", False, False),  # exact match: "18.00" is not "18"
    ("The answer is 3 * 3 = 9 packs.", "3", None, "9", False, False),  # flexible takes the last number
    ("She has $1,234.", "1234", None, "1234", False, True),  # `$`, comma and final period are ignored
    ("Russia is 2/3 the size", "2", None, "3", False, False),  # `2/3` ends in 3
    ("no digits", "1", None, None, False, False),  # "[invalid]" in lm-eval
]


@pytest.mark.parametrize(("text", "gold", "strict", "flexible", "strict_ok", "flexible_ok"), LMEVAL_CASES)
def test_lmeval_readings_follow_its_gsm8k_task(
    text: str, gold: str, strict: str | None, flexible: str | None, strict_ok: bool, flexible_ok: bool
) -> None:
    g = answers.grade(text, gold)
    assert (g.pred_lmeval_strict, g.pred_lmeval_flexible) == (strict, flexible)
    assert (g.lmeval_strict_correct, g.lmeval_flexible_correct) == (strict_ok, flexible_ok)


def test_table_is_large_and_mixed() -> None:
    grades = [answers.grade(t, g) for t, g, _, _ in CASES]
    assert len(CASES) >= 40
    # every corner of the strict/lenient square except "strict right, lenient wrong" (impossible) appears
    corners = {(g.strict_correct, g.lenient_correct) for g in grades}
    assert corners == {(True, True), (False, True), (False, False)}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$1,234.50", "1234.5"),  # money
        ("18.00", "18"),  # integral decimals
        ("18.", "18"),  # trailing dot
        ("18..", "18"),  # several trailing dots (lm-eval strips one; we strip all)
        ("-5", "-5"),  # sign kept
        ("-0", "0"),  # negative zero is zero
        ("0.50", "0.5"),  # trailing zero
        ("1e3", "1000"),  # exponent form
        ("3/4", None),  # fractions are not plain numbers
        ("twelve", None),  # words are not numbers
        ("", None),  # empty
        (None, None),  # nothing
        ("nan", None),  # not finite
    ],
)
def test_normalize_number(raw: str | None, expected: str | None) -> None:
    assert answers.normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("18", "18", True),  # same
        ("18.0", "18", True),  # numeric equality
        ("1,800", "1800", True),  # commas
        ("17", "18", False),  # wrong
        (None, "18", False),  # no prediction is never correct
        ("18", None, False),  # no gold is never correct
        ("1/2", "0.5", True),  # fraction via Math-Verify
        ("\\frac{3}{4}", "0.75", True),  # LaTeX via Math-Verify
        ("\\frac{3}{5}", "0.75", False),  # LaTeX, wrong
    ],
)
def test_is_correct(pred: str | None, gold: str | None, expected: bool) -> None:
    assert answers.is_correct(pred, gold) is expected


def test_grade_is_frozen() -> None:
    g = answers.grade("#### 3", "3")
    with pytest.raises(AttributeError):
        g.strict_correct = False  # type: ignore[misc]


def test_strict_correct_implies_lenient_correct_on_real_completions(smollm2_completions: list[dict]) -> None:
    grades = [answers.grade(r["completion"], r["gold"]) for r in smollm2_completions]
    assert all(g.lenient_correct for g in grades if g.strict_correct)
    # the calibration scan (shared/calibration) counted 312 completions with a marker and 7 strict-correct
    assert sum(g.has_format for g in grades) == 312
    # the scan read the last marker and counted 7 strict-correct; one of them numbers its sections `#### 3.` ...
    # `#### 6` (gold 6) and commits to 11, so the strict reading, which needs its markers to agree, counts 6
    assert sum(g.strict_correct for g in grades) == 6
    # every completion here that writes its gold number is in the hand-labelled set, where 11 are right; the scan's
    # "last number" counted 13, two of them numbers in working cut off before any answer (test_labelled.py)
    assert sum(g.lenient_correct for g in grades) == 11
