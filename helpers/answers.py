"""Read a final answer out of a model completion and grade it against GSM8K's gold number.

Four readings. The series' own two: `extract_strict` needs the `#### <number>` line the prompt asks for;
`extract_lenient` reads what a human grader reads. lm-eval's two GSM8K filters, kept verbatim so the series'
numbers compare with published lm-eval figures: `extract_lmeval_strict` (strict-match) and
`extract_lmeval_flexible` (flexible-extract), graded by lm-eval's exact match (`lmeval_match`).
Pure Python and fast: Math-Verify is imported lazily and only for forms the numeric fast path cannot read
(fractions, LaTeX). Metrics live in `metrics`; the hand-labelled completions the readings are measured against
are `tests/fixtures/labelled_completions.jsonl`.

Reading rules, one a line; the first that yields a reading decides (the strict reading is rule 1 alone):
1. `####` lines: their number, when they all give the same one (two answers, or `####` as section numbers: none).
2. `\\boxed{...}`: the last box's content.
3. The last "answer is / was / : / =" statement holding a number: its first number (`answer is **$1,200**` -> 1200).
4. ... unless that number opens an expression or ratio: the result after its last `=` (`answer is 3 * 3 = 9` -> 9), or none (`2:1`).
5. A concluding sentence ("So, ...", "Therefore ...") after that statement overrides it with its last number.
6. Otherwise the last number in the text (lm-eval's flexible-extract: a concluding sentence's result) ...
7. ... unless the text stops mid-sentence, cut off before any conclusion (`So, 2(`, `= 4. This is the`): none.
Numbers: `$`, thousands commas, spaces and trailing periods are dropped, integral decimals lose their zeros,
negatives keep their sign, `3/4` and LaTeX fractions compare by value (Math-Verify).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# A number as models write it: optional sign and `$`, thousands commas, decimals, or a plain fraction.
# Widened from lm-eval's strict-match `#### (\-?[0-9\.\,]+)` so that `$1,234.50`, `-$5` and `3/4` read whole;
# a space may follow `$` but not a sign, so a bullet's dash (`- 7 apples`) is no minus.
NUMBER_PATTERN = r"-?(?:\$\s?)?-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
NUMBER_RE = re.compile(NUMBER_PATTERN)
# lm-eval gsm8k strict-match, anchored on the marker, with the rest of its line (`#### 3 * 4 = 12` states 12).
STRICT_RE = re.compile(r"####\s*(" + NUMBER_PATTERN + r")([^\n]*)")
BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
# "The answer is 18", "final answer: $18" (lm-eval gsm8k-cot strict-match family): the statement that follows,
# up to the end of its sentence (a period before a space or the end) or line; not a negation ("answer isn't 5"),
# and onto the next line only when a number opens it ("The answer is:\n\n45", not "Answer:\nShe buys 3 ...").
ANSWER_IS_RE = re.compile(
    r"answer\s*(?:is|was|=|:)(?!n't|\s+not\b)[ \t]*:?[ \t]*(?:\n\s*(?=[-$\d]))?(.*?)(?:\.(?=\s|$)|\n|$)",
    re.IGNORECASE,
)
# What makes a stated number an operand, not a result: an operator and another number, perhaps after unit words
# (`3 * 3`, `2 bags x 6 eggs`), an `=` (`10/2 = 5`, `4 packs = 28`), or a ratio (`2:1`).
_EXPRESSION_AFTER_RE = re.compile(r"(?:\s+[A-Za-z]+)*\s*(?:[-+*/x\u00d7\u00f7]\s*\$?\d|=)|\s*:\s*\d")
# A sentence that concludes with a result: "So, 9 * 3 = 27 stickers.", "So there are 27 in total." (read for its
# last number); one that only mentions a number ("Therefore, step 2 was right.") is not a result.
CONCLUSION_RE = re.compile(
    r"(?:^|(?<=[.!?\n]))[ \t]*(?:so|therefore|thus|hence|in total|altogether|finally)\b([^\n]*?)(?:\.(?=\s|$)|\n|$)",
    re.IGNORECASE,
)
_RESULT_WORDS_RE = re.compile(r"=|\b(?:total|altogether|in all|answer)\b", re.IGNORECASE)
LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")
_SENTENCE_ENDS = frozenset(".!?)]*\"'`")
_OPEN_EXPRESSION = frozenset("([{+-/=\u00d7\u00f7")  # not `*`: bold text ends in `**`
# lm-eval's GSM8K filters and exact-match normalization (lm_eval/tasks/gsm8k/gsm8k.yaml), verbatim.
LMEVAL_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
LMEVAL_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LMEVAL_RUN_CHARS = frozenset("-$0123456789.,")
LMEVAL_UNTIL = "Question:"  # lm-eval stops generating here (gsm8k.yaml `until`); its readings see no further
LMEVAL_IGNORE = tuple(re.compile(p) for p in (",", "\\$", "(?s).*#### ", "\\.$"))
_NUMBER_CHARS = frozenset("0123456789.,$-/ ")
_DIGITS = "0123456789"
MARKER = "####"
CHECKERS = ("strict", "lenient")  # the series' own readings: the filter and the rewards choose between them
LMEVAL_CHECKERS = ("lmeval_strict", "lmeval_flexible")  # lm-eval's GSM8K readings, reported beside them


@dataclass(frozen=True)
class Grade:
    """Every reading of one completion: what each checker read (`pred_*`) and whether it equals the gold."""

    pred_strict: str | None
    pred_lenient: str | None
    pred_lmeval_strict: str | None
    pred_lmeval_flexible: str | None
    has_format: bool
    strict_correct: bool
    lenient_correct: bool
    lmeval_strict_correct: bool
    lmeval_flexible_correct: bool


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
    """The number the `####` lines give, or None: no marker with a number, or markers that disagree (a text
    that commits to two answers, or numbers its sections with `####`, has no single formatted answer).

    >>> extract_strict("3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_strict("#### $1,200.\\nSo that is 1200.\\n#### 1200")
    '1200'
    >>> extract_strict("#### 5\\nWait, recheck.\\n#### 7") is None, extract_strict("The answer is 7.") is None
    (True, True)
    >>> extract_strict("#### 6*9 = 54, Lea has 54 shells left.")
    '54'

    """
    if MARKER not in text:
        return None
    found = {_stated_result(number + rest) for number, rest in STRICT_RE.findall(text)} - {None}
    return found.pop() if len(found) == 1 else None


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
    """What a human grader reads as the final answer (the rules in this module's docstring, in order).

    >>> extract_lenient("So she has 18 apples. The answer is 18. Check: 9 + 9.")
    '18'
    >>> extract_lenient("Total: \\\\boxed{42}")
    '42'
    >>> extract_lenient("She pays 3 * 4 = 12 dollars."), extract_lenient("The answer is 3 * 3 = 9 packs paid.")
    ('12', '9')
    >>> extract_lenient("no digits here") is None, extract_lenient("The answer is 2:1, a ratio.") is None
    (True, True)
    """
    strict = extract_strict(text)
    if strict is not None:
        return strict
    if "\\boxed" in text:
        boxed = [b for b in BOXED_RE.findall(text) if b.strip()]
        if boxed:
            return _clean(boxed[-1])
    if "frac" in text:
        text = LATEX_FRAC_RE.sub(r"\1/\2", text)  # `$\frac{3}{4}$` reads as the number 3/4, not as 3
    if "nswer" in text or "NSWER" in text:
        statements = [m for m in ANSWER_IS_RE.finditer(text) if any(d in m.group(1) for d in _DIGITS)]
        if statements:
            later = _concluded_after(text, statements[-1].end())
            return later if later is not None else _stated_result(statements[-1].group(1))
    return None if _cut_off(text) else _last_number(text)


def _concluded_after(text: str, start: int) -> str | None:
    """The result of the last concluding sentence ("So, ...", "Therefore ...") after `start` that holds a number.

    >>> _concluded_after("The answer is 3. So, 9 bags * 3 = 27 stickers. Check: 9 + 9.", 16)
    '27'
    """
    found = [
        m.group(1)
        for m in CONCLUSION_RE.finditer(text, start)
        if any(d in m.group(1) for d in _DIGITS) and _RESULT_WORDS_RE.search(m.group(1))
    ]
    return _last_number(found[-1]) if found else None


def _cut_off(text: str) -> bool:
    """The text stops mid-sentence (the length limit cut it before any conclusion): in an unfinished expression
    (`So, 2(`, `6 * 2 =`) or in a sentence that holds no number. Its last number belongs to the working.

    >>> _cut_off("So 2 * 2 = 4.\\n\\nThis is the"), _cut_off("So, 2("), _cut_off("so 3 are left"), _cut_off("It is 4!")
    (True, True, False, False)
    """
    end = text.rstrip()
    if end and end[-1] in _OPEN_EXPRESSION:
        return True
    if not end or end[-1] in _SENTENCE_ENDS or end[-1].isdigit():
        return False
    fragment = re.split(r"[.!?](?=\s)|\n", end)[-1]
    return not any(d in fragment for d in _DIGITS)


def _stated_result(statement: str) -> str | None:
    """The number an "answer is ..." statement states: its first number, or, when that number opens an
    expression or a ratio, the result after the statement's last `=` (None when it gives none).

    >>> _stated_result(" 3 * 3 = 9 packs paid"), _stated_result(" **$1,200**"), _stated_result(" 10/2 = 5")
    ('9', '1200', '5')
    >>> _stated_result(" that she has 5 apples"), _stated_result(" 3 * 3"), _stated_result(" 2:1")
    ('5', None, None)
    """
    first = NUMBER_RE.search(statement)
    if first is None:
        return None
    if not _EXPRESSION_AFTER_RE.match(statement, first.end()):
        return _clean(first.group(0))
    if "=" not in statement:
        return None
    result = NUMBER_RE.search(statement, statement.rindex("=") + 1)
    return _clean(result.group(0)) if result else None


def lmeval_normalize(s: str) -> str:
    """lm-eval's exact-match preprocessing for GSM8K: drop commas, `$`, everything up to `#### `, a final period;
    then lower case (`ignore_case`)."""
    for pattern in LMEVAL_IGNORE:
        s = pattern.sub("", s)
    return s.strip().lower()


def extract_lmeval_strict(text: str) -> str | None:
    """lm-eval's strict-match: the first `#### <digits, dots, commas>` before any `Question:`, normalized; None is
    its "[invalid]".

    >>> extract_lmeval_strict("#### 1,200.\\n#### 7"), extract_lmeval_strict("####7")
    ('1200', None)
    """
    match = LMEVAL_STRICT_RE.search(text.split(LMEVAL_UNTIL, 1)[0])
    return lmeval_normalize(match.group(1)) if match else None


def extract_lmeval_flexible(text: str) -> str | None:
    """lm-eval's flexible-extract: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`, normalized.

    A match never crosses a character outside `-$0-9.,`, so the last run of those characters that holds a match
    holds the last match: the runs are read from the end, which spares a scan of the whole text.

    >>> extract_lmeval_flexible("3 * 3 = 9 packs."), extract_lmeval_flexible("It is 18.00 dollars")
    ('9', '18.00')
    >>> extract_lmeval_flexible("The answer is 7.\\n\\nQuestion: Tom has 5 apples")
    '7'
    """
    text = text.split(LMEVAL_UNTIL, 1)[0]
    end = len(text)
    while end > 0:
        while end > 0 and text[end - 1] not in _LMEVAL_RUN_CHARS:
            end -= 1
        start = end
        while start > 0 and text[start - 1] in _LMEVAL_RUN_CHARS:
            start -= 1
        matches = LMEVAL_FLEXIBLE_RE.findall(text, start, end)
        if matches:
            return lmeval_normalize(next(group for group in matches[-1] if group))
        end = start
    return None


def lmeval_match(pred: str | None, gold: str | None) -> bool:
    """lm-eval's exact match: equal strings after its normalization (so "18.00" is not "18"); None never matches.

    >>> lmeval_match("1200", "1,200"), lmeval_match("18.00", "18"), lmeval_match(None, "3")
    (True, False, False)
    """
    if pred is None or gold is None:
        return False
    return lmeval_normalize(pred) == lmeval_normalize(str(gold))


def matches(checker: str, pred: str | None, gold: str | None) -> bool:
    """Whether `checker`'s reading `pred` counts as `gold`: lm-eval's exact match for its checkers, else by value."""
    return lmeval_match(pred, gold) if checker in LMEVAL_CHECKERS else is_correct(pred, gold)


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
    """Grade one completion under all four readings.

    >>> grade("7 apples\\n#### 7", "7").strict_correct, grade("It is 7 apples.", "7").strict_correct
    (True, False)
    """
    strict = extract_strict(text)
    lenient = strict if strict is not None else extract_lenient(text)
    lm_strict, lm_flexible = extract_lmeval_strict(text), extract_lmeval_flexible(text)
    return Grade(
        pred_strict=strict,
        pred_lenient=lenient,
        pred_lmeval_strict=lm_strict,
        pred_lmeval_flexible=lm_flexible,
        has_format=MARKER in text,
        strict_correct=is_correct(strict, gold),
        lenient_correct=is_correct(lenient, gold),
        lmeval_strict_correct=lmeval_match(lm_strict, gold),
        lmeval_flexible_correct=lmeval_match(lm_flexible, gold),
    )
