"""Properties of answer normalization and extraction (hypothesis): `pytest tests/property`."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from helpers import answers

number_text = st.one_of(
    st.integers(-(10**9), 10**9).map(str),
    st.integers(0, 10**9).map(lambda i: f"${i:,}"),
    st.decimals(-(10**6), 10**6, places=3, allow_nan=False, allow_infinity=False).map(str),
    st.integers(0, 999).map(lambda i: f"{i}." + "." * (i % 3)),
    st.text(max_size=8),
)


@given(number_text)
def test_normalize_number_is_idempotent(s: str) -> None:
    once = answers.normalize_number(s)
    assert answers.normalize_number(once) == once


@given(st.decimals(-(10**6), 10**6, places=4, allow_nan=False, allow_infinity=False))
def test_normalize_number_keeps_the_value(d: Decimal) -> None:
    assert Decimal(answers.normalize_number(str(d))) == d


@given(
    st.integers(-(10**9), 10**9),
    st.sampled_from(["{}", "{:,}", "${:,}", "{}.", "{}.00"]),
    st.text(alphabet=st.characters(blacklist_characters="#"), max_size=40),
)
def test_extractors_recover_any_integer_after_the_marker(value: int, fmt: str, prose: str) -> None:
    text = f"{prose}\n#### {fmt.format(value) if value >= 0 or '$' not in fmt else '-' + fmt.format(-value)}"
    assert answers.extract_strict(text) == str(value)
    assert answers.extract_lenient(text) == str(value)
    assert answers.grade(text, str(value)).strict_correct


@given(st.text(alphabet="ab -$0123456789.,\n#", max_size=30))
def test_flexible_extract_equals_lm_evals_regex_over_the_whole_text(text: str) -> None:
    # lm-eval: findall over the whole text, the last match, its first non-empty group; we read runs from the end
    matches = answers.LMEVAL_FLEXIBLE_RE.findall(text)
    last = next(group for group in matches[-1] if group) if matches else None
    expected = answers.lmeval_normalize(last) if last is not None else None
    assert answers.extract_lmeval_flexible(text) == expected
