"""Sample-set metrics: pass@k, the two maj@k, bootstrap and Wilson intervals, and the per-variant summary table.

"maj@k" means two things, so it has two names here: `maj_half@k` (the original study's maj@k) is the share of
problems right in more than half of their k samples; `maj_vote@k` (the literature's maj@k: lm-eval's majority
vote, Meta's `em_maj1@1`, self-consistency) is the share whose most common answer among the k is right.
Inputs are already graded (see `answers.grade`); this module never reads completions or files. numpy and
pandas only, so it tests in milliseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers.answers import CHECKERS, LMEVAL_CHECKERS, is_correct, matches

BOOT_SEED = 0  # fixed so that a rerun of the same samples prints the same intervals
JUDGE = "judge"  # the optional LLM-judge checker: a `judge_correct` verdict and no extracted answer
EVAL_CHECKERS = (*CHECKERS, *LMEVAL_CHECKERS, JUDGE)
# The two maj@k by name, for k samples a problem (`MAJ_HALF.format(k=8)` is "maj_half@8"); the module docstring
# defines them, and so does MAJ_DEFINITIONS wherever a reader first meets them.
MAJ_HALF, MAJ_VOTE = "maj_half@{k}", "maj_vote@{k}"
MAJ_DEFINITIONS = (
    "`maj_half@{k}` (the original study's maj@k) is the share of problems right in more than half of their {k} "
    "samples; `maj_vote@{k}` (the literature's maj@k: majority-vote accuracy, as in lm-eval and self-consistency) "
    "is the share whose most common answer among the {k} is right."
)


def checkers_in(graded: pd.DataFrame) -> list[str]:
    """The checkers whose verdicts (`<checker>_correct`) the graded samples carry, in `EVAL_CHECKERS` order."""
    return [c for c in EVAL_CHECKERS if f"{c}_correct" in graded]


def _pass_at_k_one(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} correct of n={n} samples is impossible; need 0 <= c <= n.")
    if n - c < k:
        return 1.0
    # Product form of 1 - C(n-c, k) / C(n, k) (Chen et al. 2021): no huge binomials, stable for large n.
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k(n: int, c: int | Sequence[int] | np.ndarray, k: int) -> float | np.ndarray:
    """Unbiased pass@k estimator 1 - C(n-c, k)/C(n, k) for n samples of which c are correct.

    Vectorized over `c`: an array of counts gives an array of estimates.

    >>> pass_at_k(8, 2, 1), round(pass_at_k(8, 2, 8), 3)
    (0.25, 1.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must be between 1 and n={n} (the samples per problem).")
    if np.ndim(c) == 0:
        return _pass_at_k_one(n, int(c), k)
    return np.array([_pass_at_k_one(n, int(ci), k) for ci in np.asarray(c)], dtype=float)


def maj_half_at_k(correct_counts: Sequence[int] | np.ndarray, n: int) -> float:
    """`maj_half@n`, the original study's maj@k: the share of problems right in more than half of their n samples
    (5 or more of 8).

    >>> maj_half_at_k([8, 5, 4, 0], 8)
    0.5
    """
    counts = np.asarray(correct_counts)
    if counts.size == 0:
        raise ValueError("maj_half_at_k: no problems given.")
    return float(np.mean(counts * 2 > n))


def majority_answer(preds: Sequence[str | None]) -> str | None:
    """The most common answer; ties go to the one seen first, and None never wins.

    >>> majority_answer(["3", None, None, "4", "4", "3"])
    '3'
    """
    counts = Counter(p for p in preds if p is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(p for p in preds if p is not None and counts[p] == best)


def maj_vote_at_k(preds_per_problem: Sequence[Sequence[str | None]], golds: Sequence[str]) -> float:
    """`maj_vote@k`, majority-vote (self-consistency) accuracy: the share of problems whose most common answer
    among their k equals the gold.

    >>> maj_vote_at_k([["3", "3", "4"], ["5", None, None]], ["3", "6"])
    0.5
    """
    if len(preds_per_problem) == 0:
        raise ValueError("maj_vote_at_k: no problems given.")
    hits = [is_correct(majority_answer(p), g) for p, g in zip(preds_per_problem, golds, strict=True)]
    return float(np.mean(hits))


def bootstrap_ci(
    per_problem_values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """95 % percentile interval of the mean, resampling problems with replacement."""
    values = np.asarray(per_problem_values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci: no values given.")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a share: `successes` of `n` independent yes/no cases.

    Unlike a bootstrap of the cases, it does not collapse to [0, 0] when no case is a success: 0 of 16 still
    allows up to 0.19, 0 of 200 up to 0.019.

    >>> [round(x, 3) for x in wilson_interval(0, 16)]
    [0.0, 0.194]
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: {successes} of {n}; need n >= 1 and 0 <= successes <= n.")
    share, spread = successes / n, z * z / n
    centre = (share + spread / 2) / (1 + spread)
    half = z * np.sqrt(share * (1 - share) / n + spread / (4 * n)) / (1 + spread)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def paired_bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = BOOT_SEED,
) -> tuple[float, float, float]:
    """Mean of a - b over the same problems, with its 95 % paired bootstrap interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap_diff: a has {a.size} problems, b has {b.size}; pair the same ones."
        )
    diff = a - b
    low, high = bootstrap_ci(diff, n_boot, seed)
    return float(diff.mean()), low, high


def per_problem(graded: pd.DataFrame, checker: str) -> pd.DataFrame:
    """One row per problem: samples `n`, correct count `c`, and the majority-vote hit, for one checker.

    The judge gives verdicts, not answers, so its majority-vote hit is NaN.
    """
    if checker not in EVAL_CHECKERS:
        raise ValueError(f"Unknown checker {checker!r}. Choose one of: {', '.join(EVAL_CHECKERS)}.")
    if f"{checker}_correct" not in graded:
        raise ValueError(
            f"No {checker}_correct column: these samples were not graded by the {checker} checker."
        )
    grouped = graded.groupby("problem_id", sort=True)
    table = grouped.agg(
        n=(f"{checker}_correct", "size"), c=(f"{checker}_correct", "sum"), gold=("gold", "first")
    )
    if f"pred_{checker}" not in graded:
        table["vote_correct"] = np.nan
        return table
    votes = grouped[f"pred_{checker}"].agg(lambda s: majority_answer(list(s)))
    table["vote_correct"] = [matches(checker, v, g) for v, g in zip(votes, table["gold"], strict=True)]
    return table


def per_problem_scores(graded: pd.DataFrame, checker: str) -> pd.DataFrame:
    """Per problem, for one checker: pass@1, pass@n, maj_half@n and maj_vote@n (their means are the summary's
    numbers). The judge gives verdicts, not answers: no maj_vote@n for it."""
    table = per_problem(graded, checker)
    sizes = table["n"].unique()
    if len(sizes) != 1:
        raise ValueError(f"Problems have different sample counts {sorted(sizes)}; sample k for each.")
    n, c = int(sizes[0]), table["c"].to_numpy()
    scores = {
        "pass@1": pass_at_k(n, c, 1),
        f"pass@{n}": pass_at_k(n, c, n),
        MAJ_HALF.format(k=n): (c * 2 > n).astype(float),
    }
    if table["vote_correct"].notna().all():
        scores[MAJ_VOTE.format(k=n)] = table["vote_correct"].to_numpy(dtype=float)
    return pd.DataFrame(scores, index=table.index)


REQUIRED_COLUMNS = (
    "variant",
    "problem_id",
    "gold",
    "strict_correct",
    "lenient_correct",
    "has_format",
    "pred_strict",
    "pred_lenient",
)


def _summary_row(graded: pd.DataFrame, checker: str, n_boot: int) -> dict[str, float | int | str]:
    table = per_problem(graded, checker)
    scores = per_problem_scores(graded, checker)
    n = int(table["n"].iloc[0])
    row: dict[str, float | int | str] = {"n_problems": len(table), "n_samples": int(table["n"].sum())}
    for k in range(1, n + 1):
        row[f"pass@{k}"] = float(pass_at_k(n, table["c"].to_numpy(), k).mean())
    row[MAJ_HALF.format(k=n)] = float(scores[MAJ_HALF.format(k=n)].mean())
    # NaN for the judge: no answers to vote on
    row[MAJ_VOTE.format(k=n)] = float(table["vote_correct"].mean())
    row["format_rate"] = float(graded["has_format"].mean())
    if "n_tokens" in graded:
        row["mean_tokens"] = float(graded["n_tokens"].mean())
    for name in scores.columns:
        row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_ci(scores[name].to_numpy(), n_boot)
    return row


def summarize(graded: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """One row per (variant, checker) from one row per graded sample.

    Columns: n_problems, n_samples, pass@1..pass@n, maj_half@n, maj_vote@n (the module docstring defines both),
    format_rate, mean_tokens (when `n_tokens` is given) and 95 % bootstrap bounds `<metric>_lo`/`_hi` for pass@1,
    pass@n, maj_half@n and maj_vote@n (none of maj_vote@n for the judge). Checkers: every `EVAL_CHECKERS` reading
    whose `<checker>_correct` column is present (judge only when it ran).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in graded.columns]
    if missing:
        raise ValueError(
            f"summarize: graded samples lack columns {missing}; grade them with answers.grade first."
        )
    if graded.empty:
        raise ValueError("summarize: no graded samples given.")
    rows = []
    for variant, part in graded.groupby("variant", sort=False):
        for checker in checkers_in(graded):
            rows.append({"variant": variant, "checker": checker, **_summary_row(part, checker, n_boot)})
    return pd.DataFrame(rows)
