"""Numbers rounded to what their intervals support, and the claims as a reader meets them:
`pytest tests/unit/test_report.py`."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import report


@pytest.mark.parametrize(
    ("half_width", "bounds", "expected"),
    [
        (0.056, (), 2),  # first significant digit 5: keep it (0.01)
        (0.141, (), 2),  # leading 1: keep two significant digits (0.14)
        (0.023, (), 3),  # leading 2: two significant digits (0.023)
        (0.0035, (), 3),  # leading 3: one is enough
        (5.6, (), 0),  # gain per million tokens: whole numbers
        (16.0, (), 0),  # leading 1 of 16: two significant digits, i.e. units
        (55.0, (), -1),  # tens
        (0.0, (), report.DEGENERATE_DECIMALS),  # [0, 0]: no width to read digits from
        (float("nan"), (), report.DEGENERATE_DECIMALS),
        (0.056, (0.004, 0.116), 3),  # 0.004 must not show as 0.00: a verdict reads its sign
        (0.056, (0.0, 0.112), 2),  # a bound that is 0 may show as 0
        (1e-9, (), report.MAX_DECIMALS),  # never more than MAX_DECIMALS
    ],
)
def test_decimals_follow_the_half_width(half_width: float, bounds: tuple, expected: int) -> None:
    assert report.decimals(half_width, bounds) == expected


def test_an_interval_and_its_number_are_rounded_alike() -> None:
    assert report.format_interval(0.6576280471103807, 0.55, 0.75) == "0.66 [0.55, 0.75]"
    assert report.format_interval(-0.009765625, -0.021484375, 0.00390625, signed=True) == (
        "-0.010 [-0.021, +0.004]"
    )
    assert report.format_interval(10.697, 5.517, 16.736, signed=True) == "+11 [+6, +17]"
    assert report.format_interval(0.0, 0.0, 0.0) == "0.00 [0.00, 0.00]"
    assert report.format_interval(float("nan"), 0.1, 0.2) == "-"
    assert report.format_interval(0.25, float("nan"), float("nan")) == "0.250"  # no interval: a share


def test_numbers_without_an_interval_keep_what_a_reader_needs() -> None:
    assert [report.format_number(x) for x in (0.232421875, 5.7, 13.04, 671.6)] == [
        "0.232",
        "5.70",
        "13.0",
        "672",
    ]
    assert report.format_number(-0.0098, signed=True) == "-0.010" and report.format_number(None) == "-"


def test_with_intervals_folds_the_bounds_into_their_column() -> None:
    frame = pd.DataFrame({"m": [0.5], "m_lo": [0.4], "m_hi": [0.6], "other": [1.0]})
    shown = report.with_intervals(frame, ["m", "absent"])
    assert list(shown.columns) == ["m", "other"] and shown.loc[0, "m"] == "0.50 [0.40, 0.60]"


CLAIMS = pd.DataFrame(
    [
        {
            "claim": "1 at large k. What a variant reaches, the base reaches",
            "verdict": "holds",
            "evidence": "SFT_1, share of problems only it solves 0.0625 [0.011, 0.283] (1 problems, crossover 8 [4, >16])",
        },
        {
            "claim": "2. SFT and ORPO raise maj_half@8, the original study's maj@8 (lenient checker)",
            "verdict": "inconclusive (interval includes 0)",
            "evidence": "SFT_1 minus base, maj_half@8 +0.094 [+0.031, +0.172]; ORPO_1 minus base, maj_half@8 "
            "+0.016 [+0.000, +0.047]",
        },
        {
            "claim": "4. Second-round samples are better",
            "verdict": "holds",
            "evidence": "right share of round 1's samples: 0.112; round 2 minus round 1 +0.146 [+0.111, +0.187] "
            "(SFT_1 was trained on some of these problems)",
        },
        {
            "claim": "6. GRPO's reward is sparse",
            "verdict": "inconclusive: GRPO did not train (stopped by its plateau rule after 8 of 32 prompts)",
            "evidence": "the numbers alone: does not hold; steps in which no group carried a signal: at least 0 of 8",
        },
        {"claim": "9. A claim this module does not know", "verdict": "not tested (x)", "evidence": "-"},
    ]
)


def test_each_verdict_is_one_line_in_plain_words() -> None:
    lines = report.verdict_lines(CLAIMS, 8).splitlines()
    assert len(lines) == len(CLAIMS)
    assert lines[1] == (
        "- **2.** SFT and ORPO make the model more reliable: right in more than half of its 8 tries "
        "(maj_half@8). **inconclusive (interval includes 0)**"
    )
    assert lines[0].startswith("- **1 at large k.** Given many tries")
    assert lines[4] == "- **9.** 9. A claim this module does not know **not tested (x)**"  # its own text


def test_the_evidence_splits_into_one_rounded_row_per_item() -> None:
    rows = report.evidence_rows(CLAIMS)
    assert rows.values.tolist() == [
        ["1 at large k.", "SFT_1, share of problems only it solves (1 problems, crossover 8 [4, >16])", "0.06",
         "[0.01, 0.28]"],
        ["2.", "SFT_1 minus base, maj_half@8", "+0.09", "[+0.03, +0.17]"],
        ["2.", "ORPO_1 minus base, maj_half@8", "+0.016", "[+0.000, +0.047]"],
        ["4.", "right share of round 1's samples", "0.112", ""],
        ["4.", "round 2 minus round 1 (SFT_1 was trained on some of these problems)", "+0.15", "[+0.11, +0.19]"],
        ["6.", "the numbers alone: does not hold", "", ""],
        ["6.", "steps in which no group carried a signal: at least 0 of 8", "", ""],
    ]  # fmt: skip


def test_the_claims_section_gives_verdicts_then_numbers_then_the_claims_as_tested() -> None:
    text = report.claims_section(CLAIMS, 8)
    assert text.index("- **2.**") < text.index("| claim | what | value | 95 % interval |")
    assert text.index("| claim | what | value") < text.index("| claim | as tested |")
    assert all(claim in text for claim in CLAIMS["claim"])


def test_tables_for_readers_carry_both_maj_at_k_with_intervals() -> None:
    results = pd.DataFrame(
        [
            {"variant": v, "checker": c, "pass@1": 0.1171875, "pass@1_lo": 0.0878, "pass@1_hi": 0.1504,
             "pass@8": 0.53, "maj_half@8": 0.0, "maj_half@8_lo": 0.0, "maj_half@8_hi": 0.0,
             "maj_vote@8": 0.265625, "format_rate": 0.232421875}
            for v in ("base", "SFT_1") for c in ("strict", "lenient")
        ]
    )  # fmt: skip
    table = report.results_table(results, 8)
    assert list(table.columns) == ["checker", "pass@1", "pass@8", "maj_half@8", "maj_vote@8", "format rate"]
    assert table["checker"].tolist() == ["strict", "strict", "lenient", "lenient"]  # by checker, then variant
    assert table.iloc[0][["pass@1", "maj_half@8", "maj_vote@8"]].tolist() == [
        "0.12 [0.09, 0.15]",
        "0.00 [0.00, 0.00]",
        0.265625,  # no interval in this table: markdown_table rounds it as a share
    ]
    paired = pd.DataFrame(
        {
            "variant": ["SFT_1", "SFT_1", "SFT_1"],
            "checker": ["lenient", "lenient", "judge"],
            "metric": ["maj_half@8", "maj_vote@8", "maj_half@8"],
            "diff": [0.09375, 0.11, 0.05],
            "lo": [0.03125, 0.05, 0.0],
            "hi": [0.171875, 0.17, 0.1],
        }
    )
    wide = report.paired_table(paired)
    assert wide.loc["SFT_1"].values.tolist() == [
        ["lenient", "+0.09 [+0.03, +0.17]", "+0.11 [+0.05, +0.17]"],
        ["judge", "+0.05 [+0.00, +0.10]", "-"],
    ]
