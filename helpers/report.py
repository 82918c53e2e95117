"""Numbers and tables as readers see them in `REPORT.md` and the README: each number rounded to what its interval
supports, pipe tables, the claims' verdicts in plain words and their evidence in a compact table.

The numbers and verdicts come from `metrics`, `evaluation` and `large_k`; this module only formats (no I/O).
Rounding rule (`decimals`): a number with a 95 % interval keeps the digits down to its half-width's first
significant digit, or its second when that first digit is 1 or 2 (a half-width of 0.14 keeps 0.01, one of 0.056
keeps 0.01, one of 0.023 keeps 0.001: the Particle Data Group's convention), and one more while a bound that is
not 0 would show as 0 (a verdict reads the bound's sign). A number without an interval keeps 3 decimals below 1
(shares) and 3 significant digits above.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from helpers.metrics import MAJ_HALF, MAJ_VOTE

MAX_DECIMALS = 4
TINY = 1e-12  # below this a bound is 0 (a bootstrap mean of zeros can come out as 3e-18)
DEGENERATE_DECIMALS = 2  # an interval of width 0 ([0, 0]: every resample alike) supports no particular digit

# Each claim in plain words, by the label its text starts with (`evaluation.claims`, `large_k.claim`); {k} is the
# samples per problem of 08. The claims' own texts keep the precise test (threshold, checker, metric).
PLAIN = {
    "1 at large k.": "Given many tries, the untrained model solves every problem a trained one solves.",
    "1.": "No training method lets the model solve noticeably more problems when it may try {k} times (pass@{k}).",
    "2.": "SFT and ORPO make the model more reliable: right in more than half of its {k} tries (maj_half@{k}).",
    "3.": "GRPO's gain is mostly format: it shrinks when answers are read leniently instead of strictly.",
    "4.": "A second round of samples, drawn from the model trained on the first, holds more right answers.",
    "5a.": "Training on a stronger model's checked answers beats training on the model's own (teacher).",
    "5b.": "Training on the data set's worked solutions beats training on the model's own answers.",
    "6.": "Most of GRPO's groups of {k} answers are all right or all wrong, and so teach it nothing.",
    "7.": "Per token of compute, SFT on a teacher's checked answers gains more than GRPO.",
    "8.": "GRPO on problems the model solves only sometimes gets more signal, and more gain per token, than GRPO "
    "on every problem.",
}
NUMBER = r"[+-]?\d+(?:\.\d+)?"
# One evidence item as `evaluation` and `large_k` write them: "<what> <value> [<lo>, <hi>]<note>" (a bound may be
# ">n", a crossover beyond the largest k), or "<what>: <value>" for a number without an interval; any other item
# stays text.
ITEM = re.compile(
    rf"^(?P<what>.*?)\s+(?P<value>{NUMBER})\s\[(?P<lo>{NUMBER}|>\d+), (?P<hi>{NUMBER}|>\d+)\](?P<note>.*)$"
)
BARE = re.compile(rf"^(?P<what>.*?):\s(?P<value>{NUMBER})$")


def decimals(half_width: float, bounds: tuple[float, ...] = ()) -> int:
    """Decimals that a number with a 95 % interval of `half_width` supports (the module's rule); `bounds`: the
    interval's ends, none of which may show as 0 unless it is 0.

    >>> decimals(0.141), decimals(0.056), decimals(0.023), decimals(5.6), decimals(0.056, (0.004, 0.12))
    (2, 2, 3, 0, 3)
    """
    if not math.isfinite(half_width) or half_width <= 0:
        places = DEGENERATE_DECIMALS
    else:
        exponent = math.floor(math.log10(half_width))
        leading = int(half_width / 10**exponent)
        places = -exponent + (1 if leading < 3 else 0)
    while places < MAX_DECIMALS and any(abs(b) > TINY and round(b, places) == 0 for b in bounds):
        places += 1
    return min(places, MAX_DECIMALS)


def _fixed(value: float, places: int, signed: bool) -> str:
    sign = "+" if signed else ""
    if places < 0:
        return f"{round(value, places):{sign}.0f}"
    return f"{value:{sign}.{places}f}"


def format_interval(value: float, lo: float, hi: float, signed: bool = False) -> str:
    """'0.12 [0.09, 0.15]': the number and its interval rounded alike by the module's rule; `signed`: a
    difference, shown with its sign ('+0.20 [+0.06, +0.34]'); a missing number shows as '-'.

    >>> format_interval(0.1171875, 0.087841796875, 0.150390625), format_interval(0.203, 0.062, 0.344, signed=True)
    ('0.12 [0.09, 0.15]', '+0.20 [+0.06, +0.34]')
    """
    if pd.isna(value):
        return "-"
    if pd.isna(lo) or pd.isna(hi):
        return format_number(value, signed=signed)
    places = decimals((hi - lo) / 2, (lo, hi))
    return f"{_fixed(value, places, signed)} [{_fixed(lo, places, signed)}, {_fixed(hi, places, signed)}]"


def format_number(value: float, digits: int = 3, signed: bool = False) -> str:
    """A number without an interval: `digits` decimals below 1 (a share), then 3 significant digits (2 decimals
    below 10, 1 below 100, none from 100 up); NaN is '-'.

    >>> format_number(0.232421875), format_number(5.7), format_number(53.0), format_number(100.4)
    ('0.232', '5.70', '53.0', '100')
    """
    if pd.isna(value):
        return "-"
    size = abs(value)
    return _fixed(value, digits if size < 1 else 2 if size < 10 else 1 if size < 100 else 0, signed)


def with_intervals(
    frame: pd.DataFrame, columns: list[str], lo: str = "{}_lo", hi: str = "{}_hi"
) -> pd.DataFrame:
    """`frame` with each of `columns` as 'value [lo, hi]' text, from the bound columns named by `lo`/`hi` (which
    are dropped); a column without bounds keeps its numbers."""
    shown = frame.copy()
    for column in columns:
        low, high = lo.format(column), hi.format(column)
        if low not in frame or high not in frame:
            continue
        shown[column] = [
            format_interval(v, a, b) for v, a, b in zip(frame[column], frame[low], frame[high], strict=True)
        ]
        shown = shown.drop(columns=[low, high])
    return shown


def _cell(value: object, digits: int) -> str:
    if pd.api.types.is_float(value):
        return format_number(float(value), digits)
    if value is None or value is pd.NA:
        return "-"
    return " ".join(str(value).replace("|", "\\|").split("\n"))


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table of `frame` (index included): numbers without an interval by `format_number`, missing ones as
    '-', pipes in a cell escaped and its line breaks made spaces (a claim's evidence may quote an error)."""
    frame = frame.reset_index()
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    rows = ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines + rows)


def label(claim: str) -> str:
    """The label a claim's text starts with: '1.', '5a.', '1 at large k.'."""
    if claim.startswith("1 at large k."):
        return "1 at large k."
    return claim.split(" ", 1)[0]


def plain(claim: str, k: int) -> str:
    """The claim in plain words (`PLAIN`), or its own text for a claim `PLAIN` does not know."""
    return PLAIN[label(claim)].format(k=k) if label(claim) in PLAIN else claim


def verdict_lines(claims: pd.DataFrame, k: int) -> str:
    """One line per claim: its label, the claim in plain words, and the verdict in bold."""
    return "\n".join(
        f"- **{label(c)}** {plain(c, k)} **{v}**"
        for c, v in zip(claims["claim"], claims["verdict"], strict=True)
    )


def evidence_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims' evidence, one row per item (items are joined by '; '): claim label, what, value and 95 %
    interval, each rounded by the module's rule; an item without an interval keeps its text under `what`."""
    rows = []
    for claim, evidence in zip(claims["claim"], claims["evidence"], strict=True):
        for item in str(evidence).split("; "):
            if item.strip() in ("", "-"):
                continue
            found, bare = ITEM.match(item.strip()), BARE.match(item.strip())
            row = {"claim": label(claim), "what": item.strip(), "value": "", "95 % interval": ""}
            if found:
                row |= {"what": (found["what"] + found["note"]).strip()} | _parsed(found)
            elif bare:
                value = float(bare["value"])
                row |= {"what": bare["what"], "value": format_number(value, signed=bare["value"][0] in "+-")}
            rows.append(row)
    return pd.DataFrame(rows, columns=["claim", "what", "value", "95 % interval"])


def _parsed(found: re.Match) -> dict[str, str]:
    signed = found["value"][0] in "+-"
    if found["lo"].startswith(">") or found["hi"].startswith(">"):  # a crossover: whole numbers of k
        return {"value": found["value"], "95 % interval": f"[{found['lo']}, {found['hi']}]"}
    value, lo, hi = float(found["value"]), float(found["lo"]), float(found["hi"])
    text = format_interval(value, lo, hi, signed)
    point, interval = text.split(" ", 1)
    return {"value": point, "95 % interval": interval}


def claims_section(claims: pd.DataFrame, k: int) -> str:
    """The verdicts in plain words, the numbers behind them in one compact table, and each claim as tested."""
    parts = [verdict_lines(claims, k)]
    evidence = evidence_rows(claims)
    if not evidence.empty:
        parts += ["", "The numbers behind the verdicts, with their 95 % intervals:", ""]
        parts.append(markdown_table(evidence.set_index("claim")))
    tested = pd.DataFrame({"claim": [label(c) for c in claims["claim"]], "as tested": claims["claim"]})
    parts += [
        "",
        "Each claim as tested (threshold, metric, checker):",
        "",
        markdown_table(tested.set_index("claim")),
    ]
    return "\n".join(parts)


def results_table(results: pd.DataFrame, k: int) -> pd.DataFrame:
    """`metrics.summarize`'s table as a reader sees it: per checker and variant, pass@1, pass@k, maj_half@k and
    maj_vote@k, each with its interval where the table has one, and the format rate."""
    names = [m for m in ("pass@1", f"pass@{k}", MAJ_HALF.format(k=k), MAJ_VOTE.format(k=k)) if m in results]
    bounds = [f"{m}_{end}" for m in names for end in ("lo", "hi") if f"{m}_{end}" in results]
    frame = results[["variant", "checker", *names, *bounds, "format_rate"]]
    frame = pd.concat([part for _, part in frame.groupby("checker", sort=False)])
    return with_intervals(frame, names).rename(columns={"format_rate": "format rate"}).set_index("variant")


def paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """`evaluation.paired`'s long table as a reader sees it: one row per checker and variant, one column per
    metric, each cell 'difference [lo, hi]' (a metric a checker lacks, such as the judge's maj_vote@k, is '-')."""
    cells = paired.assign(
        cell=[
            format_interval(d, a, b, signed=True)
            for d, a, b in zip(paired["diff"], paired["lo"], paired["hi"], strict=True)
        ]
    )
    wide = cells.pivot_table(
        index=["checker", "variant"], columns="metric", values="cell", aggfunc="first", sort=False
    )
    wide = wide.reindex(columns=list(dict.fromkeys(paired["metric"]))).fillna("-")
    return wide.rename_axis(columns=None).reset_index().set_index("variant")


def efficiency_table(ranked: pd.DataFrame, metric: str = "pass@1") -> pd.DataFrame:
    """`evaluation.efficiency`'s ranking as a reader sees it: each variant's gain with its interval, its total
    tokens, and its gain per million tokens with its interval where a gain was measured."""
    rows = {
        variant: {
            f"{metric} gain": format_interval(r[f"{metric} gain"], r["lo"], r["hi"], signed=True),
            "total tokens": int(r["total_tokens"]),
            "gain per M tokens": format_interval(
                r["gain per M tokens"], r["per M lo"], r["per M hi"], signed=True
            )
            if bool(r["gain measured"])
            else "- (no measured gain)",
        }
        for variant, r in ranked.iterrows()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
