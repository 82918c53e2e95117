"""Read a final answer out of a model completion and grade it against GSM8K's gold number.

Two checkers, as in lm-eval's GSM8K task: `extract_strict` needs the `#### <number>` line the prompt asks for;
`extract_lenient` reads what a human grader would. Pure Python and fast: Math-Verify is imported lazily and
only for forms the numeric fast path cannot read (fractions, LaTeX). Metrics live in `metrics`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# A number as models write it: optional sign and `$`, thousands commas, decimals, or a plain fraction.
# Widened from lm-eval's strict-match `#### (\-?[0-9\.\,]+)` so that `$1,234.50`, `-$5` and `3/4` read whole.
NUMBER_PATTERN = r"-?\$?\s?-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
NUMBER_RE = re.compile(NUMBER_PATTERN)
# lm-eval gsm8k strict-match, anchored on the marker; we take the *last* marker (models restate answers).
STRICT_RE = re.compile(r"####\s*(" + NUMBER_PATTERN + ")")
BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
# "The answer is 18", "final answer: $18" (lm-eval gsm8k-cot strict-match family, escaped properly).
ANSWER_IS_RE = re.compile(r"answer\s*(?:is|was|=|:)\s*:?\s*\**\s*(" + NUMBER_PATTERN + ")", re.IGNORECASE)
_NUMBER_CHARS = frozenset("0123456789.,$-/ ")
_DIGITS = "0123456789"
MARKER = "####"
CHECKERS = ("strict", "lenient")  # the two readings every grade carries; metrics and filtering use both


@dataclass(frozen=True)
class Grade:
    """Both checkers' reading of one completion."""

    pred_strict: str | None
    pred_lenient: str | None
    has_format: bool
    strict_correct: bool
    lenient_correct: bool


def normalize_number(s: str | None) -> str | None:
    """Canonical decimal form of a number string, or None when it is not a plain number.

    Strips `$`, commas, spaces and trailing dots (every one, so the function is idempotent), and writes
    integral values without decimals.

    >>> [normalize_number(x) for x in ["$1,234.50", "18.00", "18.", "-5", " 7 ", "abc", "0.0"]]
    ['1234.5', '18', '18', '-5', '7', None, '0']
    """
    if s is None:
        return None
    cleaned = s.replace("$", "").replace(",", "").replace(" ", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _clean(raw: str) -> str:
    """Normalized number when the text is one, else the stripped text (e.g. a fraction for Math-Verify)."""
    return normalize_number(raw) or raw.replace("$", "").replace(" ", "").strip().rstrip(".")


def extract_strict(text: str) -> str | None:
    """The number after the last `####` marker, or None (no marker, or no number right after it).

    >>> extract_strict("3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_strict("#### 5\\nWait, recheck.\\n#### $1,200.")
    '1200'
    >>> extract_strict("The answer is 7.") is None
    True
    """
    pos = text.rfind(MARKER)
    if pos < 0:
        return None
    match = STRICT_RE.match(text, pos)
    return _clean(match.group(1)) if match else None


def _last_number(text: str) -> str | None:
    """The last number-like span in `text` (lm-eval's flexible-extract, group_select -1)."""
    end = max(text.rfind(d) for d in _DIGITS)
    if end < 0:
        return None
    start = end
    while start > 0 and text[start - 1] in _NUMBER_CHARS:
        start -= 1
    spans = NUMBER_RE.findall(text, start, end + 1)
    return _clean(spans[-1]) if spans else None


def extract_lenient(text: str) -> str | None:
    """What a human grader reads as the final answer: marker, else `\\boxed{}`, else "answer is X", else
    the last number in the text.

    >>> extract_lenient("So she has 18 apples. The answer is 18. Check: 9 + 9.")
    '18'
    >>> extract_lenient("Total: \\\\boxed{42}")
    '42'
    >>> extract_lenient("She pays 3 * 4 = 12 dollars.")
    '12'
    >>> extract_lenient("no digits here") is None
    True
    """
    strict = extract_strict(text)
    if strict is not None:
        return strict
    if "\\boxed" in text:
        boxed = BOXED_RE.findall(text)
        if boxed:
            return _clean(boxed[-1])
    if "nswer" in text or "NSWER" in text:
        phrases = ANSWER_IS_RE.findall(text)
        if phrases:
            return _clean(phrases[-1])
    return _last_number(text)


def _math_verify(pred: str, gold: str) -> bool:
    """Math-Verify for forms the numeric fast path cannot read (fractions, LaTeX)."""
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - it is in requirements.txt
        raise ImportError(
            "Grading LaTeX answers needs Math-Verify: pip install 'math-verify[antlr4_13_2]'"
        ) from err
    return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))


def is_correct(pred: str | None, gold: str | None) -> bool:
    """True when `pred` equals `gold` as a number; None is never correct.

    >>> is_correct("18.00", "18"), is_correct("1/2", "0.5"), is_correct(None, "3")
    (True, True, False)
    """
    if pred is None or gold is None:
        return False
    p, g = normalize_number(pred), normalize_number(gold)
    if p is not None and g is not None:
        return p == g
    return _math_verify(pred, gold)


def grade(text: str, gold: str) -> Grade:
    """Grade one completion under both checkers.

    >>> grade("7 apples\\n#### 7", "7").strict_correct, grade("It is 7 apples.", "7").strict_correct
    (True, False)
    """
    strict = extract_strict(text)
    lenient = strict if strict is not None else extract_lenient(text)
    return Grade(
        pred_strict=strict,
        pred_lenient=lenient,
        has_format=MARKER in text,
        strict_correct=is_correct(strict, gold),
        lenient_correct=is_correct(lenient, gold),
    )
