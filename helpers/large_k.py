"""Notebook 09: pass@k out to large k, the way Yue et al. (2025) test whether training widens what a model can
solve at all.

The base and every trained variant answer a seeded subset of the test problems `large_k_n` times each, with 08's
engine, prompt, temperature and seeds. Per variant and checker: the unbiased pass@k for k = 1, 2, 4, ..., n with
bootstrap intervals over problems; the k from which the base's curve lies above the variant's (the crossover);
the share of problems solved at least once (coverage) and the problems one solves that the other never does.
Claim 1 ("whatever the trained models reach, the base reaches") is judged at k = n and written into 08's claims
table and `REPORT.md` beside the k = k_eval verdict.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from helpers import evaluation, metrics, report, sampling
from helpers.evaluation import BASE, MUCH, Claim, below, joint, verdict
from helpers.files import BadInput, atomic_write_text
from helpers.runs import Run

log = logging.getLogger(__name__)

TABLES = {name: f"eval/large_k/{name}.csv" for name in ("curves", "crossover", "coverage", "claim")}
FIGURE = "figures/09_pass_at_k_{checker}.png"
REPORTED = ("strict", "lenient")  # the checkers of REPORT.md's large-k tables (the CSVs have every one)
LABEL = "1 at large k."  # how claim 1's large-k row starts in the claims table (08's row starts "1. ")
EPS = 1e-12  # "above": by more than rounding (two curves that both reach 1.0 tie)


def k_grid(n: int) -> list[int]:
    """The k of the curves: 1, 2, 4, ... below n, then n itself.

    >>> k_grid(16), k_grid(12)
    ([1, 2, 4, 8, 16], [1, 2, 4, 8, 12])
    """
    if n < 1:
        raise ValueError(f"k_grid: n={n} samples; need at least 1.")
    return [*(2**i for i in range(n.bit_length()) if 2**i < n), n]


def problems(run: Run) -> datasets.Dataset:
    """The run's test problems that 09 samples: `large_k_problems` of them drawn with the run's seed (in test-set
    order), or all of them."""
    test = run.problems("test")
    wanted = run.cfg.large_k_problems
    if wanted is None or wanted >= len(test):
        return test
    picked = np.sort(np.random.default_rng(run.cfg.seed).permutation(len(test))[:wanted])
    return test.select(picked.tolist())


def samples_file(variant: str) -> str:
    return f"samples/large_k_{variant}.jsonl"


def sample_all(run: Run, names: list[str], lora_requests: bool = False) -> pd.DataFrame:
    """`large_k_n` samples per problem of `problems(run)` from each variant (resumable), graded, one frame.

    The engine is 08's (`evaluation.shared_engine`, where `lora_requests` is explained); the judge is not asked
    (it would cost n/k times 08's verdicts)."""
    subset, n = problems(run), run.cfg.large_k_n
    found = []
    needed = any(not sampling.complete(run.path(samples_file(name)), subset, n) for name in names)
    with evaluation.shared_engine(run, lora_requests, needed) as shared:
        for number, name in enumerate(names, start=1):
            log.info("%s (%d of %d): %d problems x %d samples", name, number, len(names), len(subset), n)
            start_from_evaluation(run, name, subset, shared)
            graded = evaluation.sample_variant(run, name, subset, samples_file(name), shared, k=n)
            found.append(graded.assign(variant=name))
    return pd.concat(found, ignore_index=True)


def start_from_evaluation(
    run: Run, variant: str, subset: datasets.Dataset, model: tuple | None = None
) -> int:
    """Begin 09's sample file of `variant` with 08's samples of the subset: sample i of a problem has the same seed,
    prompt and settings in both, so 09 draws only the indices from 08's k on, and its curves at k <= 08's k rest
    on 08's very samples. Only a file not begun, and only rows drawn with the settings 09 would use; returns the
    rows copied."""
    target, source = run.root / samples_file(variant), run.root / evaluation.test_samples_file(variant)
    if target.exists() or not source.is_file():
        return 0
    c = run.cfg
    wanted = sampling.row_settings(
        model or c.model,
        evaluation.adapter_of(run, variant),
        "auto",
        seed=c.seed,
        temperature=c.temperature,
        top_p=c.top_p,
        max_new_tokens=c.max_new_tokens,
    )
    rows = sampling.read_samples(source)
    keep = rows["problem_id"].isin(set(subset["id"])) & (rows["sample_idx"] < c.large_k_n)
    for key, value in wanted.items():
        keep &= rows[key] == value
    if not keep.any():
        return 0
    lines = [json.dumps(row) for row in rows.loc[keep, list(sampling.ROW_FIELDS)].to_dict("records")]
    atomic_write_text(target, "\n".join(lines) + "\n")
    sampling.stats_path(target).unlink(missing_ok=True)  # a deleted file's throughput is not this one's
    log.info("%s: %d of 08's samples start it", target, len(lines))
    return len(lines)


def pass_table(graded: pd.DataFrame, checker: str, ks: list[int]) -> pd.DataFrame:
    """One variant's per-problem unbiased pass@k (rows: problems, columns: `ks`), for one checker."""
    table = metrics.per_problem(graded, checker)
    sizes = sorted(table["n"].unique())
    if sizes != [ks[-1]]:
        raise ValueError(
            f"Problems have {sizes} samples, not n={ks[-1]}: sample every problem n times (rerun 09, it resumes)."
        )
    return pd.DataFrame(
        {k: metrics.pass_at_k(ks[-1], table["c"].to_numpy(), k) for k in ks}, index=table.index
    )


def _tables(graded: pd.DataFrame, checker: str) -> tuple[list[int], dict[str, pd.DataFrame]]:
    """The k grid and each variant's `pass_table`, all on the same problems (else a clear error)."""
    n = int(graded.groupby(["variant", "problem_id"]).size().max())
    ks = k_grid(n)
    found = {v: pass_table(part, checker, ks) for v, part in graded.groupby("variant", sort=False)}
    for variant, table in found.items():
        if BASE in found and not table.index.equals(found[BASE].index):
            raise ValueError(f"{variant} and the base were sampled on different problems: rerun 09 for both.")
    return ks, found


def curves(graded: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """pass@k for k in `k_grid(n)`, per variant and checker, with 95 % bootstrap intervals over problems."""
    rows = []
    for checker in metrics.checkers_in(graded):
        ks, tables = _tables(graded, checker)
        for variant, table in tables.items():
            for k in ks:
                low, high = metrics.bootstrap_ci(table[k].to_numpy(), n_boot)
                rows.append(
                    {
                        "variant": variant,
                        "checker": checker,
                        "k": k,
                        "pass@k": table[k].mean(),
                        "lo": low,
                        "hi": high,
                    }
                )
    return pd.DataFrame(rows, columns=["variant", "checker", "k", "pass@k", "lo", "hi"])


def overtaken_from(diffs: np.ndarray, ks: list[int]) -> np.ndarray:
    """For each row of `diffs` (base minus variant at each k of `ks`): the smallest k at which the base lies above
    and from which it never lies below again (a tie after it, such as both at 1.0, keeps it), or inf where there is
    none ("none up to n": the base never overtakes; curves that only meet or tie never cross)."""
    diffs = np.asarray(diffs)
    never_below = np.flip(np.logical_and.accumulate(np.flip(diffs >= -EPS, -1), -1), -1)
    from_here = (diffs > EPS) & never_below
    return np.where(from_here.any(-1), np.asarray(ks, dtype=float)[from_here.argmax(-1)], np.inf)


def describe_crossover(k: float, low: float, high: float, n: int) -> str:
    """'8 [4, 16]'; 'none up to 16 [8, >16]' where the base never overtakes: inf (or NaN, as a CSV gives it back)
    is "none up to n" as the point and ">n" as a bound."""

    def show(value: float) -> str:
        return f">{n}" if not np.isfinite(value) else str(int(value))

    point = f"none up to {n}" if not np.isfinite(k) else str(int(k))
    return f"{point} [{show(low)}, {show(high)}]"


CROSSOVER_COLUMNS = [
    "variant",
    "checker",
    "n",
    "n_problems",
    "pass@1 diff",
    "base pass@n",
    "variant pass@n",
    "pass@n diff",
    "lo",
    "hi",
    "crossover_k",
    "crossover_lo",
    "crossover_hi",
    "crossover",
]


# The crossover table's columns that reports show (beside the variant and checker).
SHOWN = ("pass@1 diff", "base pass@n", "variant pass@n", "pass@n diff", "lo", "hi", "crossover")


def crossovers(graded: pd.DataFrame, n_boot: int = 1000, seed: int = metrics.BOOT_SEED) -> pd.DataFrame:
    """Per trained variant and checker: where the base's pass@k curve overtakes it for good (`overtaken_from`, with a
    95 % bootstrap interval over problems: percentiles of the resampled crossovers, each an actual k of the grid;
    "none up to n" where the base never overtakes), and the paired differences at k = 1 and k = n (variant minus
    base)."""
    rows = []
    for checker in metrics.checkers_in(graded):
        ks, tables = _tables(graded, checker)
        if BASE not in tables:
            raise ValueError("No base samples: 09 compares every variant with the base; sample it too.")
        base = tables[BASE]
        for variant, table in tables.items():
            if variant == BASE:
                continue
            diffs = (base - table).to_numpy()
            rng = np.random.default_rng(seed)
            picks = rng.integers(0, len(diffs), size=(n_boot, len(diffs)))
            resampled = overtaken_from(diffs[picks].mean(axis=1), ks)
            low = np.quantile(resampled, 0.025, method="lower")
            high = np.quantile(resampled, 0.975, method="higher")
            point = overtaken_from(diffs.mean(axis=0), ks)[()]
            first, *_ = metrics.paired_bootstrap_diff(table[ks[0]], base[ks[0]], n_boot, seed)
            gain, gain_lo, gain_hi = metrics.paired_bootstrap_diff(table[ks[-1]], base[ks[-1]], n_boot, seed)
            rows.append(
                {
                    "variant": variant,
                    "checker": checker,
                    "n": ks[-1],
                    "n_problems": len(base),
                    "pass@1 diff": first,
                    "base pass@n": base[ks[-1]].mean(),
                    "variant pass@n": table[ks[-1]].mean(),
                    "pass@n diff": gain,
                    "lo": gain_lo,
                    "hi": gain_hi,
                    "crossover_k": point,
                    "crossover_lo": low,
                    "crossover_hi": high,
                    "crossover": describe_crossover(point, low, high, ks[-1]),
                }
            )
    frame = pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)
    for column in ("crossover_k", "crossover_lo", "crossover_hi"):  # NaN: none up to n
        frame[column] = frame[column].replace(np.inf, np.nan)
    return frame


def _listed(ids: list[str], counts: pd.Series, n: int) -> str:
    return ", ".join(f"{pid} ({int(counts[pid])}/{n})" for pid in ids) or "-"


def coverage(graded: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per variant and checker: the share of problems solved at least once in n samples (95 % interval over
    problems), and against the base the problems only one of the two ever solves, with each one's count of right
    samples (`base_only`: the base solves them, the variant never; `variant_only`: the reverse), and the share of
    problems only the variant solves with its 95 % Wilson interval (`variant_only_share`, `_lo`, `_hi`: claim 1 at
    large k; a bootstrap would give [0, 0] whenever there is none, whatever the number of problems)."""
    rows = []
    for checker in metrics.checkers_in(graded):
        counts = {v: metrics.per_problem(p, checker) for v, p in graded.groupby("variant", sort=False)}
        base = counts.get(BASE)
        for variant, table in counts.items():
            solved = table["c"] > 0
            low, high = metrics.bootstrap_ci(solved.to_numpy(dtype=float), n_boot)
            row = {"variant": variant, "checker": checker, "coverage": solved.mean(), "lo": low, "hi": high}
            row |= {"solved": int(solved.sum()), "n_problems": len(table)}
            if base is not None and variant != BASE:
                n = int(table["n"].iloc[0])
                base_solved = base["c"].reindex(table.index) > 0
                only_base = sorted(table.index[base_solved & ~solved])
                only_variant = sorted(table.index[solved & ~base_solved])
                share_lo, share_hi = metrics.wilson_interval(len(only_variant), len(table))
                row |= {
                    "base_only": len(only_base),
                    "variant_only": len(only_variant),
                    "variant_only_share": len(only_variant) / len(table),
                    "variant_only_lo": share_lo,
                    "variant_only_hi": share_hi,
                    "base_only_problems": _listed(only_base, base["c"], n),
                    "variant_only_problems": _listed(only_variant, table["c"], n),
                }
            rows.append(row)
    frame = pd.DataFrame(rows)
    if "base_only" in frame:  # counts stay whole numbers beside the base's empty cells
        frame[["base_only", "variant_only"]] = frame[["base_only", "variant_only"]].astype("Int64")
    return frame


def claim(
    crossover: pd.DataFrame, covered: pd.DataFrame, k_eval: int, missing: list[str] | tuple[str, ...] = ()
) -> Claim:
    """Claim 1 at large k: what a variant reaches, the base reaches. Judged by the verdict rules on the share of
    problems a variant solves in n samples and the base never does (lenient, 95 % Wilson interval): holds
    when that share lies below `MUCH` for every trained variant, does not hold when it lies above for one, else
    inconclusive. This share is at least the net pass@n gain (a variant may also lose problems), so it is the
    stricter reading of "can already reach"; the pass@n differences and the crossovers are the evidence beside it.
    `missing`: variants not trained yet, named in the evidence (the verdict covers the others)."""
    part = crossover[crossover["checker"] == "lenient"].set_index("variant")
    reach = covered[(covered["checker"] == "lenient") & (covered["variant"] != BASE)].set_index("variant")
    if part.empty:
        return Claim(
            f"{LABEL} What a variant reaches, the base reaches", "not tested (no trained variant)", "-"
        )
    n, m = int(part["n"].iloc[0]), int(part["n_problems"].iloc[0])
    label = (
        f"{LABEL} What a variant reaches, the base reaches: no variant solves a share of {MUCH:.2f} or more of the "
        f"problems the base never solves (lenient; {m} test problems x {n} samples, 09_large_k; 08's k={k_eval} "
        "verdict below)"
    )
    rows = reach.loc[part.index]
    each = [below(verdict(r["variant_only_lo"], r["variant_only_hi"], MUCH)) for _, r in rows.iterrows()]
    found = joint(each, f"inconclusive (an interval reaches {MUCH:.2f})")
    evidence = "; ".join(
        f"{v}, share of problems only it solves "
        + report.format_interval(
            rows.loc[v, "variant_only_share"], rows.loc[v, "variant_only_lo"], rows.loc[v, "variant_only_hi"]
        )
        + f" ({int(rows.loc[v, 'variant_only'])} of {m} problems, the base alone {int(rows.loc[v, 'base_only'])}, "
        f"pass@{n} minus base {report.format_interval(r['pass@n diff'], r['lo'], r['hi'], signed=True)}, "
        f"crossover {r['crossover']})"
        for v, r in part.iterrows()
    )
    if missing:
        evidence += f"; not trained, not tested: {', '.join(missing)}"
    return Claim(label, found, evidence)


def with_claim(claims: list[Claim] | pd.DataFrame, large: pd.DataFrame) -> pd.DataFrame:
    """The claims table (claim, verdict, evidence) with claim 1's large-k row (`large`, one row) put just before
    08's claim 1, replacing an earlier large-k row."""
    frame = evaluation.claims_frame(claims)
    kept = frame[~frame["claim"].str.startswith(LABEL)].reset_index(drop=True)
    first = kept.index[kept["claim"].str.startswith("1.")]
    at = int(first[0]) if len(first) else 0
    return pd.concat([kept.iloc[:at], large, kept.iloc[at:]], ignore_index=True)


def has_run(run: Run) -> bool:
    """Whether 09 saved every table of its in this run directory (what the pipeline counts as its outputs)."""
    return all((run.root / path).is_file() for path in TABLES.values())


def with_saved_claim(run: Run, claims: list[Claim]) -> pd.DataFrame:
    """08's claims table, with claim 1 at large k beside claim 1 once 09 has run on this run directory."""
    if not has_run(run):
        return evaluation.claims_frame(claims)
    return with_claim(claims, _read_csv(run.root / TABLES["claim"]))


def check_ready(run: Run) -> None:
    """Before any sampling: 08's claims table and a report with the parts 09 rewrites are there (else the error
    names the step to run)."""
    report = run.require("REPORT.md", "08_evaluation")
    run.require("eval/claims.csv", "08_evaluation")
    text = report.read_text(encoding="utf-8")
    for start, end in (
        (evaluation.CLAIMS_START, evaluation.CLAIMS_END),
        (evaluation.LARGE_K_START, evaluation.LARGE_K_END),
    ):
        evaluation.replace_block(text, start, end, "", report, _rerun_08(run))


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)  # an empty evidence cell stays "" (not NaN)


def save(run: Run, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write the tables (`TABLES`'s names) as CSV under `eval/large_k/`, each atomically."""
    return {
        name: atomic_write_text(run.path(TABLES[name]), frame.to_csv(index=False))
        for name, frame in tables.items()
    }


def crossover_table(crossover: pd.DataFrame) -> pd.DataFrame:
    """The crossover table as a reader sees it: per variant and checker, the differences with their intervals
    (rounded by `report`'s rule) and the crossover."""
    shown = crossover[["variant", "checker", *SHOWN]].rename(
        columns={"lo": "pass@n diff_lo", "hi": "pass@n diff_hi"}
    )
    for column in ("pass@1 diff", "base pass@n", "variant pass@n"):
        shown[column] = [report.format_number(v, signed=column.endswith("diff")) for v in shown[column]]
    return report.with_intervals(shown, ["pass@n diff"]).set_index("variant")


def coverage_table(covered: pd.DataFrame) -> pd.DataFrame:
    """The coverage table as a reader sees it: shares with their intervals, counts, and the problems only one of
    the two solves ('-' for the base's own row)."""
    shown = covered.rename(
        columns={
            "lo": "coverage_lo",
            "hi": "coverage_hi",
            "variant_only_lo": "variant_only_share_lo",
            "variant_only_hi": "variant_only_share_hi",
        }
    )
    # counts, whole beside the base's blanks
    for column in ("solved", "n_problems", "base_only", "variant_only"):
        if column in shown:
            shown[column] = shown[column].astype("Int64")
    shown = report.with_intervals(shown, ["coverage", "variant_only_share"])
    return shown.astype(object).where(shown.notna(), "-").set_index("variant")


def report_section(run: Run) -> str | None:
    """09's part of `REPORT.md`, from its saved tables and figures (None before 09 ran)."""
    if not has_run(run):
        return None
    crossover = pd.read_csv(run.root / TABLES["crossover"])
    covered = pd.read_csv(run.root / TABLES["coverage"])
    n, m = (
        int(crossover["n"].iloc[0]) if len(crossover) else run.cfg.large_k_n,
        int(covered["n_problems"].iloc[0]),
    )
    crossover = crossover[crossover["checker"].isin(REPORTED)]
    covered = covered[covered["checker"].isin(REPORTED)]
    figures = [
        run.root / FIGURE.format(checker=c)
        for c in REPORTED
        if (run.root / FIGURE.format(checker=c)).is_file()
    ]
    parts = [
        f"### Claim 1 at large k: pass@k to k = {n} (`09_large_k`)",
        "",
        f"The base and every variant answered {m} test problems (a seeded subset) {n} times each, with the "
        "evaluation's engine, prompt and temperature. **Crossover**: the smallest k at which the base's pass@k "
        "curve lies above the variant's and from which it never lies below again, with its 95 % bootstrap interval "
        "over problems; *none up to n* (>n as a bound) where the base never overtakes (curves that only meet or "
        "tie do not cross). Differences are variant minus base, paired. Strict and lenient checkers here; "
        "`eval/large_k/` has lm-eval's readings too.",
        "",
        report.markdown_table(crossover_table(crossover)),
        "",
        f"**Coverage** (solved at least once in {n}, with its bootstrap interval) and the problems only one of the "
        "two ever solves (right samples out of n in brackets); `variant_only_share` and its 95 % Wilson interval "
        "decide claim 1 at large k:",
        "",
        report.markdown_table(coverage_table(covered)),
        "",
        *[f"![{p.stem}]({p.relative_to(run.root).as_posix()})" for p in figures],
    ]
    return "\n".join(parts).strip("\n")


def _rerun_08(run: Run) -> str:
    return (
        f"Rerun 08 (python -m helpers.pipeline run --profile {run.cfg.profile} --run-dir {run.root} --only 08 "
        "--force), then 09."
    )


def update_report(run: Run, found: Claim) -> Path:
    """Put claim 1 at large k into 08's `eval/claims.csv` and `REPORT.md` (its claims table and 09's part)."""
    claims_path = run.require("eval/claims.csv", "08_evaluation")
    report_path = run.require("REPORT.md", "08_evaluation")
    table = with_claim(_read_csv(claims_path), evaluation.claims_frame([found]))
    section = report_section(run)
    if section is None:
        raise BadInput(
            f"09's tables are not all in {run.root / 'eval' / 'large_k'}: save them first (`save`)."
        )
    text = report_path.read_text(encoding="utf-8")
    claims_part = evaluation.claims_section(table, run.cfg.k)
    fix = _rerun_08(run)
    text = evaluation.replace_block(
        text, evaluation.CLAIMS_START, evaluation.CLAIMS_END, claims_part, report_path, fix
    )
    text = evaluation.replace_block(
        text, evaluation.LARGE_K_START, evaluation.LARGE_K_END, section, report_path, fix
    )
    atomic_write_text(claims_path, table.to_csv(index=False))
    return atomic_write_text(report_path, text)
