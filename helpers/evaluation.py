"""Notebook 07: every variant on the same test problems, graded strict, lenient (and by a judge), summarized,
compared with the base over the same problems, and the seed's claims checked against the intervals.

Numbers come from `metrics`, figures from `plots`; this module gathers the per-variant files, builds the
tables and writes `REPORT.md`.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import agreement, config, cpu_engine, judge, metrics, models, training
from helpers.files import atomic_write_text, write_jsonl
from helpers.runs import Run

BASE = "base"
SAMPLE_FIELDS = (
    "problem_id",
    "sample_idx",
    "completion",
    "pred_strict",
    "pred_lenient",
    "pred_lmeval_strict",
    "pred_lmeval_flexible",
    "has_format",
    "strict_correct",
    "lenient_correct",
    "lmeval_strict_correct",
    "lmeval_flexible_correct",
    "n_tokens",
)
SFT_AND_ORPO = ("SFT_1", "ORPO_1", "SFT_1_SFT_2", "SFT_1_ORPO_2", "SFT_2")
MUCH = 0.05  # claim 1: "much" is 5 points of pass@n
CHECKERS_NOTE = (
    "Checkers: `strict` (the `####` line the prompt asks for), `lenient` (what a human grader reads: "
    "`helpers/answers.py` lists its rules), lm-eval's GSM8K `lmeval_strict` (strict-match) and `lmeval_flexible` "
    "(flexible-extract) for comparison with published figures, and `judge` when an LLM judge ran. Each cell: "
    "samples graded differently (right only by the first / only by the second checker)."
)
BREAKDOWN = ("right, formatted", "right, unformatted", "wrong, formatted", "wrong, unformatted")


def variants(run: Run) -> tuple[list[str], list[str]]:
    """(the base and every trained variant, the variants not trained yet)."""
    trained = [v for v in training.VARIANTS if (run.root / "models" / v / models.MANIFEST).is_file()]
    return [BASE, *trained], [v for v in training.VARIANTS if v not in trained]


def evaluate_all(run: Run, names: list[str], one_engine: bool = False) -> pd.DataFrame:
    """`evaluate` for every variant.

    `one_engine`: one vLLM engine serves every variant, each adapter as a LoRA request. Always so on a GPU, where
    an engine per variant would not fit beside the others. On the CPU it is asked for (`True`); the default
    there is an engine per variant with its adapter merged, because LoRA requests run at about half the speed
    on a CPU (measured on 2 cores: 98 against 257 tok/s).
    """
    c = run.cfg
    target = judge.endpoint()
    if target is not None:
        expected = len(run.problems("test")) * c.k
        if any(
            judge.cached_verdicts(run.path(f"eval/judge_{n}.jsonl"), target.model) < expected for n in names
        ):
            judge.check(target)  # a judge that cannot answer stops 07 now, not after hours of sampling
    shared = None
    if models.resolve_backend()[0] == "unsloth":
        shared = models.load_model(
            c.model, max_seq_length=c.max_seq_length, load_in_4bit=c.load_in_4bit, max_lora_rank=c.lora_r
        )
    elif one_engine:
        reason = cpu_engine.unavailable()
        if reason is not None:
            raise RuntimeError(f"one_engine=True needs vLLM on this CPU: {reason}. Leave one_engine=False.")
        name, path = models.resolve_name(c.model)
        shared = cpu_engine.load(
            name, path, lora_rank_max=c.lora_r, max_seq_length=c.max_seq_length, seed=c.seed
        )
    try:
        return pd.concat([evaluate(run, name, shared) for name in names], ignore_index=True)
    finally:
        if shared is not None and isinstance(shared[0], cpu_engine.CpuEngine):
            shared[0].close()


def evaluate(run: Run, variant: str, model: tuple | None = None) -> pd.DataFrame:
    """k samples per test problem from `variant` (resumable), graded; written to `eval/samples_<variant>.jsonl`."""
    adapter = None if variant == BASE else str(run.root / "models" / variant)
    raw = f"samples/test_{variant}.jsonl"
    # An engine of its own in a child process on a GPU (its memory); on the CPU in this one (07 trains nothing).
    isolated = models.resolve_backend()[0] == "unsloth"
    graded = run.sample(run.problems("test"), raw, adapter=adapter, model=model, isolated=isolated)
    if judge.configured():
        graded["judge_correct"] = judge.judge_samples(
            graded, run.questions("test"), run.path(f"eval/judge_{variant}.jsonl")
        )
    fields = [*SAMPLE_FIELDS, *(["judge_correct"] if "judge_correct" in graded else [])]
    write_jsonl(run.path(f"eval/samples_{variant}.jsonl"), graded[fields].to_dict("records"))
    return graded.assign(variant=variant)


def paired(graded: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Each variant minus the base on pass@1, pass@n and maj@n, paired over the same problems, with intervals."""
    rows = []
    for checker in metrics.checkers_in(graded):
        base = metrics.per_problem_scores(graded[graded["variant"] == BASE], checker)
        for variant, part in graded[graded["variant"] != BASE].groupby("variant", sort=False):
            scores = metrics.per_problem_scores(part, checker)
            if set(scores.index) != set(base.index):
                raise ValueError(
                    f"{variant} and the base were sampled on different test problems: resample both."
                )
            for metric in scores.columns:
                diff, low, high = metrics.paired_bootstrap_diff(
                    scores[metric], base.loc[scores.index, metric], n_boot
                )
                rows.append(
                    {
                        "variant": variant,
                        "checker": checker,
                        "metric": metric,
                        "diff": diff,
                        "lo": low,
                        "hi": high,
                    }
                )
    return pd.DataFrame(rows, columns=["variant", "checker", "metric", "diff", "lo", "hi"])


def format_breakdown(graded: pd.DataFrame) -> pd.DataFrame:
    """Per variant, the share of samples right (lenient) and formatted (`####` line), in the four combinations."""
    right, formatted = graded["lenient_correct"].astype(bool), graded["has_format"].astype(bool)
    category = np.select(
        [right & formatted, right & ~formatted, ~right & formatted], BREAKDOWN[:3], default=BREAKDOWN[3]
    )
    table = pd.crosstab(graded["variant"], category, normalize="index")
    table = table.reindex(columns=list(BREAKDOWN), fill_value=0.0).rename_axis(columns=None)
    return table.reindex(list(graded["variant"].unique()))


def _own_cost(manifest: dict) -> dict[str, float]:
    compute = manifest["compute"]
    return {
        "tokens_sampled": compute.get("tokens_sampled_for_data", 0)
        + compute.get("tokens_sampled_in_training", 0),
        "tokens_trained": compute.get("tokens_trained", 0),
        "wall_s": compute.get("wall_s", 0.0),
    }


def _ancestors(manifests: dict[str, dict], name: str) -> set[str]:
    """Variants this one needed: its parent and the variant that sampled its data, recursively."""
    manifest = manifests[name]
    sampler = str(manifest["data"].get("sampled_by") or "").rpartition("+")[2]
    found: set[str] = set()
    for other in (manifest["parent"], sampler):
        if other in manifests and other != name:
            found |= {other} | _ancestors(manifests, other)
    return found


def costs(run: Run, names: list[str]) -> pd.DataFrame:
    """Per trained variant: its own tokens and wall time, and the totals including the variants it needed."""
    manifests = {n: models.read_manifest(run.root / "models" / n) for n in names if n != BASE}
    rows = {}
    for name, manifest in manifests.items():
        own = _own_cost(manifest)
        lineage = [name, *sorted(_ancestors(manifests, name))]
        total = {k: sum(_own_cost(manifests[n])[k] for n in lineage) for k in own}
        rows[name] = {
            **{f"own_{k}": v for k, v in own.items()},
            "needs": ", ".join(lineage[1:]) or "-",
            "total_tokens": total["tokens_sampled"] + total["tokens_trained"],
            "total_wall_s": round(total["wall_s"], 1),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


@dataclass(frozen=True)
class Claim:
    """One of the seed's claims, with this run's verdict and the numbers behind it."""

    claim: str
    verdict: str
    evidence: str


def _interval(row: pd.Series) -> str:
    return f"{row['diff']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"


def _lookup(
    table: pd.DataFrame, metric: str, checker: str, names: tuple[str, ...] | None = None
) -> pd.DataFrame:
    part = table[(table["metric"] == metric) & (table["checker"] == checker)]
    return part[part["variant"].isin(names)] if names else part


def _sign_verdict(low: float, high: float) -> str:
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold"
    return "inconclusive (interval includes 0)"


def claims(
    paired_table: pd.DataFrame, graded: pd.DataFrame, rounds: tuple[pd.DataFrame, pd.DataFrame] | None, k: int
) -> list[Claim]:
    """The seed's four claims, each judged from this run's intervals (95 % paired bootstrap over problems)."""
    found = []
    gains = _lookup(paired_table, f"pass@{k}", "lenient")
    text = "; ".join(f"{r.variant} {_interval(r)}" for _, r in gains.iterrows()) or "no trained variant"
    if gains.empty:
        verdict = "not tested (no trained variant)"
    elif (gains["hi"] < MUCH).all():
        verdict = "holds"
    elif (gains["lo"] > MUCH).any():
        verdict = "does not hold"
    else:
        verdict = f"inconclusive (an interval reaches +{MUCH:.2f})"
    found.append(
        Claim(f"1. No method raises pass@{k} much (by {MUCH:.2f} or more, lenient checker)", verdict, text)
    )

    majs = _lookup(paired_table, f"maj@{k}", "lenient", SFT_AND_ORPO)
    text = "; ".join(f"{r.variant} {_interval(r)}" for _, r in majs.iterrows()) or "no SFT/ORPO variant"
    if majs.empty:
        verdict = "not tested (no SFT or ORPO variant)"
    elif (majs["lo"] > 0).all():
        verdict = "holds"
    elif (majs["hi"] < 0).any():
        verdict = "does not hold"
    else:
        verdict = "inconclusive (interval includes 0)"
    found.append(Claim(f"2. SFT and ORPO raise maj@{k} (lenient checker)", verdict, text))

    found.append(_grpo_claim(graded))
    found.append(_rounds_claim(rounds))
    return found


def _grpo_claim(graded: pd.DataFrame) -> Claim:
    """Needs a strict gain first (interval above 0), then asks whether the lenient gain is smaller."""
    claim = "3. GRPO's gain under the strict checker shrinks under the lenient one (pass@1)"
    if "GRPO" not in set(graded["variant"]):
        return Claim(claim, "not tested (GRPO not trained)", "-")
    gain = {}
    for checker in ("strict", "lenient"):
        grpo = metrics.per_problem_scores(graded[graded["variant"] == "GRPO"], checker)["pass@1"]
        base = metrics.per_problem_scores(graded[graded["variant"] == BASE], checker)["pass@1"]
        gain[checker] = (grpo - base.loc[grpo.index]).to_numpy()
    strict, strict_lo, strict_hi = metrics.paired_bootstrap_diff(
        gain["strict"], np.zeros_like(gain["strict"])
    )
    diff, low, high = metrics.paired_bootstrap_diff(gain["strict"], gain["lenient"])
    evidence = (
        f"gain strict {strict:+.3f} [{strict_lo:+.3f}, {strict_hi:+.3f}], lenient {gain['lenient'].mean():+.3f}; "
        f"strict gain minus lenient gain {diff:+.3f} [{low:+.3f}, {high:+.3f}]"
    )
    if strict_hi < 0:
        return Claim(claim, "does not hold (GRPO is worse than the base under the strict checker)", evidence)
    if strict_lo <= 0:
        return Claim(claim, "inconclusive (the strict gain's interval includes 0)", evidence)
    return Claim(claim, _sign_verdict(low, high), evidence)


def _rounds_claim(rounds: tuple[pd.DataFrame, pd.DataFrame] | None) -> Claim:
    claim = (
        "4. Second-round samples (from SFT_1) are better than first-round ones (lenient, training problems)"
    )
    if rounds is None:
        return Claim(claim, "not tested (no second round)", "-")
    first, second = (metrics.per_problem(r, "lenient") for r in rounds)
    first_rate = first["c"] / first["n"]
    second_rate = (second["c"] / second["n"]).loc[first.index]
    diff, low, high = metrics.paired_bootstrap_diff(second_rate, first_rate)
    evidence = (
        f"correct share {first_rate.mean():.3f} -> {second_rate.mean():.3f}, "
        f"difference {diff:+.3f} [{low:+.3f}, {high:+.3f}] (SFT_1 was trained on some of these problems)"
    )
    return Claim(claim, _sign_verdict(low, high), evidence)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table of `frame` (index included), floats rounded: no extra dependency."""
    frame = frame.reset_index()
    cells = [
        [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def write_report(
    run: Run,
    results: pd.DataFrame,
    paired_table: pd.DataFrame,
    found: list[Claim],
    cost: pd.DataFrame,
    breakdown: pd.DataFrame,
    checks: tuple[pd.DataFrame, str],
    figures: list[Path],
    missing: list[str],
) -> Path:
    """`REPORT.md` in the run directory: config and date, the tables, the figures, the claims and verdicts.

    `checks`: `agreement.disagreements` of the graded samples and `agreement.examples_markdown` of them.
    """
    k = run.cfg.k
    shown = [
        "variant",
        "checker",
        "n_problems",
        "pass@1",
        f"pass@{k}",
        f"maj@{k}",
        "majority_vote",
        "format_rate",
    ]
    intervals = results[["variant", "checker"]].copy()
    for metric in ("pass@1", f"pass@{k}", f"maj@{k}"):
        intervals[metric] = [
            f"[{lo:.3f}, {hi:.3f}]"
            for lo, hi in zip(results[f"{metric}_lo"], results[f"{metric}_hi"], strict=True)
        ]
    parts = [
        f"# Report: {run.root.name}",
        "",
        f"Written {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} by `07_evaluation`. "
        f"Profile `{run.cfg.profile}`, config `{config.config_hash(run.cfg)}`: {run.describe()}.",
        "",
        "Every variant was sampled on the same test problems with the same seed, temperature and token limit: "
        f"k={k} samples per problem. Intervals are 95 % bootstrap intervals over problems.",
        "",
        "## The seed's claims, tested on this run",
        "",
        markdown_table(pd.DataFrame([c.__dict__ for c in found]).set_index("claim")),
        "",
        "## Results",
        "",
        markdown_table(results[shown].set_index("variant")),
        "",
        "95 % intervals:",
        "",
        markdown_table(intervals.set_index("variant")),
        "",
        "## Each variant minus the base (paired over problems)",
        "",
        markdown_table(paired_table.set_index("variant")),
        "",
        "## Right vs formatted (share of samples; right = lenient checker, formatted = a `####` line)",
        "",
        markdown_table(breakdown),
        "",
        "## Where the checkers disagree",
        "",
        CHECKERS_NOTE,
        "",
        markdown_table(agreement.table(checks[0])),
        "",
        "Disagreeing samples, drawn at random, in full: judge for yourself which checker read them right.",
        "",
        checks[1],
        "",
        "## Cost (tokens sampled + trained, including the variants each one needed)",
        "",
        markdown_table(cost) if not cost.empty else "No trained variant.",
        "",
        "## Figures",
        "",
        *[f"![{p.stem}]({p.relative_to(run.root).as_posix()})" for p in figures],
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(config.to_dict(run.cfg), indent=2),
        "```",
    ]
    if missing:
        parts[4:4] = [f"**Not evaluated (not trained yet):** {', '.join(missing)}.", ""]
    return atomic_write_text(run.root / "REPORT.md", "\n".join(parts) + "\n")


def training_rounds(run: Run) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The base's and SFT_1's graded training samples (rounds 1 and 2), or None before notebook 05 ran."""
    if not (run.root / "samples" / "sft1_train.jsonl").is_file():
        return None
    return (
        run.graded_samples("samples/base_train.jsonl", split="train", step="01_sampling"),
        run.graded_samples("samples/sft1_train.jsonl", split="train", step="05_second_round"),
    )
