"""Notebook 08: every variant on the same test problems, graded strict, lenient (and by a judge), summarized,
compared with the base over the same problems, and the original study's claims checked against the intervals.

Numbers come from `metrics`, figures from `plots`, the way numbers and tables read from `report`; this module
gathers the per-variant files, builds the tables, judges the claims and writes `REPORT.md`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import agreement, config, cpu_engine, judge, metrics, models, plateau, report, sampling, training
from helpers.files import BadInput, atomic_write_text, write_jsonl
from helpers.report import markdown_table
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
SOURCES = ("SFT_teacher", "SFT_gold")  # claim 5: SFT on a stronger source's answers, against SFT_1
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


def evaluate_all(run: Run, names: list[str], lora_requests: bool = False) -> pd.DataFrame:
    """`evaluate` for every variant, from the engine `shared_engine` gives (see there for `lora_requests`)."""
    c = run.cfg
    target = judge.endpoint()
    if target is not None:
        expected = len(run.problems("test")) * c.k
        if any(
            judge.cached_verdicts(run.path(f"eval/judge_{n}.jsonl"), target.model) < expected for n in names
        ):
            judge.check(target)  # a judge that cannot answer stops 08 now, not after hours of sampling
    problems = run.problems("test")
    needed = any(not sampling.complete(run.path(test_samples_file(n)), problems, c.k) for n in names)
    with shared_engine(run, lora_requests, needed) as shared:
        return pd.concat([evaluate(run, name, shared) for name in names], ignore_index=True)


@contextlib.contextmanager
def shared_engine(run: Run, lora_requests: bool = False, needed: bool = True) -> Iterator[tuple | None]:
    """The one engine every variant is sampled from (None where there is none to share, or none is `needed`:
    every sample is drawn). On a GPU Unsloth's base engine, each adapter a LoRA request (an engine per variant
    would not fit beside the others). On the CPU a vLLM engine that takes each variant's merged weights in turn
    (`cpu_engine.CpuEngine.serve`: about 2 s a variant, against 6-9 s for an engine of its own), or with
    `lora_requests` one that serves adapters as LoRA requests, as on a GPU (3-4 times slower on a CPU: measured
    on 2 cores in bf16, 212 against 845 tok/s). Where vLLM cannot run on the CPU, None: each variant's model is
    loaded for the decode loop.
    """
    c = run.cfg
    shared = None
    if needed and models.resolve_backend()[0] == "unsloth":
        shared = models.load_model(
            c.model, max_seq_length=c.max_seq_length, load_in_4bit=c.load_in_4bit, max_lora_rank=c.lora_r
        )
    elif needed and sampling.choose_backend() == cpu_engine.BACKEND:
        name, path = models.resolve_name(c.model)
        lora = {"lora_rank_max": c.lora_r} if lora_requests else {"swappable": True}
        shared = cpu_engine.load(
            name, path, max_seq_length=c.max_seq_length, max_new_tokens=c.max_new_tokens, seed=c.seed, **lora
        )
    elif needed and lora_requests:
        reason = cpu_engine.unavailable()
        raise RuntimeError(f"lora_requests=True needs vLLM on this CPU: {reason}. Leave lora_requests=False.")
    try:
        yield shared
    finally:
        if shared is not None and isinstance(shared[0], cpu_engine.CpuEngine):
            shared[0].close()


def evaluate(run: Run, variant: str, model: tuple | None = None) -> pd.DataFrame:
    """k samples per test problem from `variant` (resumable), graded; written to `eval/samples_<variant>.jsonl`."""
    graded = sample_variant(run, variant, run.problems("test"), test_samples_file(variant), model)
    if judge.configured():
        graded["judge_correct"] = judge.judge_samples(
            graded, run.questions("test"), run.path(f"eval/judge_{variant}.jsonl")
        )
    fields = [*SAMPLE_FIELDS, *(["judge_correct"] if "judge_correct" in graded else [])]
    write_jsonl(run.path(graded_file(variant)), graded[fields].to_dict("records"))
    return graded.assign(variant=variant)


def test_samples_file(variant: str) -> str:
    """Where 08 keeps a variant's raw test samples, in the run directory."""
    return f"samples/test_{variant}.jsonl"


def graded_file(variant: str) -> str:
    """Where 08 keeps a variant's graded test samples (every checker's reading and verdict), in the run directory."""
    return f"eval/samples_{variant}.jsonl"


def adapter_of(run: Run, variant: str) -> str | None:
    """The saved adapter a variant samples with (None: the base model)."""
    return None if variant == BASE else str(run.root / "models" / variant)


def sample_variant(
    run: Run, variant: str, problems: Any, relative: str, model: tuple | None = None, k: int | None = None
) -> pd.DataFrame:
    """k samples (by default the run's) per problem from `variant` into `relative` (resumable), graded."""
    adapter = adapter_of(run, variant)
    # An engine of its own in a child process on a GPU (its memory); on the CPU in this one (nothing trains after).
    isolated = models.resolve_backend()[0] == "unsloth"
    return run.sample(problems, relative, adapter=adapter, model=model, isolated=isolated, k=k)


def paired(graded: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Each variant minus the base on pass@1, pass@n, maj_half@n and maj_vote@n (`metrics.per_problem_scores`),
    paired over the same problems, with intervals."""
    rows = [
        {"variant": variant, "checker": checker, "metric": metric, **row}
        for checker in metrics.checkers_in(graded)
        for variant in graded.loc[graded["variant"] != BASE, "variant"].unique()
        for metric, row in versus(graded, variant, BASE, checker, n_boot).iterrows()
    ]
    return pd.DataFrame(rows, columns=["variant", "checker", "metric", "diff", "lo", "hi"])


def versus(graded: pd.DataFrame, variant: str, other: str, checker: str, n_boot: int = 1000) -> pd.DataFrame:
    """`variant` minus `other` on pass@1, pass@n, maj_half@n and maj_vote@n, paired over the same problems, with
    intervals."""
    scores = {
        v: metrics.per_problem_scores(graded[graded["variant"] == v], checker) for v in (variant, other)
    }
    if set(scores[variant].index) != set(scores[other].index):
        name = "the base" if other == BASE else other
        raise ValueError(f"{variant} and {name} were sampled on different test problems: resample both.")
    rows = []
    for metric in scores[variant].columns:
        a = scores[variant][metric]
        diff, low, high = metrics.paired_bootstrap_diff(a, scores[other].loc[a.index, metric], n_boot)
        rows.append({"metric": metric, "diff": diff, "lo": low, "hi": high})
    return pd.DataFrame(rows).set_index("metric")


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
        "teacher_tokens": compute.get("teacher_tokens", 0),
        "teacher_requests": compute.get("teacher_requests", 0),
        "optimizer_steps": compute.get("optimizer_steps", 0),
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
    """Per trained variant: its own tokens (the student's samples, a teacher's apart), requests to an endpoint
    teacher, optimizer steps and wall time, and the totals including the variants it needed: `total_tokens` is
    sampled + trained + teacher."""
    manifests = {n: models.read_manifest(run.root / "models" / n) for n in names if n != BASE}
    rows = {}
    for name, manifest in manifests.items():
        own = _own_cost(manifest)
        lineage = [name, *sorted(_ancestors(manifests, name))]
        total = {k: sum(_own_cost(manifests[n])[k] for n in lineage) for k in own}
        rows[name] = {
            **{f"own_{k}": v for k, v in own.items()},
            "needs": ", ".join(lineage[1:]) or "-",
            "total_tokens": total["tokens_sampled"] + total["tokens_trained"] + total["teacher_tokens"],
            "total_wall_s": round(total["wall_s"], 1),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")


@dataclass(frozen=True)
class Claim:
    """One of the original study's claims, with this run's verdict and the numbers behind it (`evidence`: items
    joined by '; ', each "<what> <value> [<lo>, <hi>]<note>" or plain text, as `report.evidence_rows` reads them)."""

    claim: str
    verdict: str
    evidence: str


def _interval(row: pd.Series) -> str:
    return report.format_interval(row["diff"], row["lo"], row["hi"], signed=True)


def _lookup(
    table: pd.DataFrame, metric: str, checker: str, names: tuple[str, ...] | None = None
) -> pd.DataFrame:
    part = table[(table["metric"] == metric) & (table["checker"] == checker)]
    return part[part["variant"].isin(names)] if names else part


# The verdict rules, one place for every claim. A claim that a quantity lies above a threshold *holds* when its
# whole 95 % interval lies above it, *does not hold* when the whole interval lies below it, and is *inconclusive*
# otherwise (a claim that it lies below swaps the first two). A claim resting on several intervals holds when
# every one holds and does not hold when any one does not. A claim resting on a GRPO arm says "<arm> did not train"
# instead when that arm did not (`plateau.did_not_train`).
HOLDS, FAILS = "holds", "does not hold"
VERDICT_RULE = (
    "A claim *holds* when the whole 95 % interval lies on its side of the threshold, *does not hold* when it lies "
    "on the other side, and is *inconclusive* otherwise; a claim resting on a GRPO arm whose reward never rose "
    "beyond its noise says that the arm *did not train* (`helpers/evaluation.py`, `helpers/plateau.py`)."
)


def verdict(low: float, high: float, threshold: float = 0.0) -> str:
    """The verdict on "the quantity is above `threshold`" from its interval [low, high]."""
    if low > threshold:
        return HOLDS
    if high < threshold:
        return FAILS
    return f"inconclusive (interval includes {threshold:g})"


def below(found: str) -> str:
    """The verdict on "the quantity is below the threshold", from `verdict`'s on "above"."""
    return {HOLDS: FAILS, FAILS: HOLDS}.get(found, found)


def joint(verdicts: list[str], inconclusive: str) -> str:
    """One verdict from several: holds when all hold, does not hold when any does not, else `inconclusive`."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == FAILS for v in verdicts):
        return FAILS
    return inconclusive


def claims(
    paired_table: pd.DataFrame,
    graded: pd.DataFrame,
    rounds: tuple[pd.DataFrame, pd.DataFrame] | None,
    k: int,
    arms: dict[str, GrpoArm] | None = None,
    ranked: pd.DataFrame | None = None,
    n_boot: int = 1000,
) -> list[Claim]:
    """The original study's claims and the series' own (8), each judged from this run's intervals (95 % paired
    bootstrap over problems) by the verdict rules above. `arms`: the GRPO arms trained, as `grpo_arms` reads them
    (claims 6 and 8, and the did-not-train rule: `plateau.did_not_train`); `ranked`: `efficiency` (claims 7, 8)."""
    arms = arms or {}
    found = []
    gains = _lookup(paired_table, f"pass@{k}", "lenient")
    text = (
        "; ".join(f"{r.variant} minus base, pass@{k} {_interval(r)}" for _, r in gains.iterrows())
        or "no trained variant"
    )
    if gains.empty:
        first = "not tested (no trained variant)"
    else:
        each = [below(verdict(r.lo, r.hi, MUCH)) for r in gains.itertuples()]
        first = joint(each, f"inconclusive (an interval reaches +{MUCH:.2f})")
    found.append(
        Claim(f"1. No method raises pass@{k} much (by {MUCH:.2f} or more, lenient checker)", first, text)
    )

    maj_half = metrics.MAJ_HALF.format(k=k)
    majs = _lookup(paired_table, maj_half, "lenient", SFT_AND_ORPO)
    text = (
        "; ".join(f"{r.variant} minus base, {maj_half} {_interval(r)}" for _, r in majs.iterrows())
        or "no SFT/ORPO variant"
    )
    if majs.empty:
        second = "not tested (no SFT or ORPO variant)"
    else:
        second = joint([verdict(r.lo, r.hi) for r in majs.itertuples()], "inconclusive (interval includes 0)")
    found.append(
        Claim(
            f"2. SFT and ORPO raise {maj_half}, the original study's maj@{k} (lenient checker)", second, text
        )
    )

    found.append(_grpo_claim(graded))
    found.append(_rounds_claim(rounds))
    found += [_source_claim(graded, source, k, n_boot) for source in SOURCES]
    found.append(_sparsity_claim(arms.get("GRPO"), n_boot))
    found.append(_efficiency_claim(graded, ranked, n_boot))
    found.append(_filtered_claim(graded, ranked, arms, n_boot))
    return mark_untrained(found, untrained(arms))


GRPO_ARMS = ("GRPO", "GRPO_filtered")
# The GRPO arms each claim's verdict speaks for: it says nothing about an arm that did not train.
RESTS_ON = {"3.": ("GRPO",), "6.": ("GRPO",), "7.": ("GRPO",), "8.": GRPO_ARMS}
# A verdict naming the arms that did not train, and why: "GRPO did not train (<why>)".
UNTRAINED = re.compile(r"^(?P<arms>\S+(?: and \S+)*) did not train \((?P<why>.*)\)$")


@dataclass(frozen=True)
class GrpoArm:
    """A trained GRPO arm's record: its groups (`plateau`) and its manifest's compute."""

    name: str
    groups: pd.DataFrame
    compute: dict[str, Any]


def grpo_arms(run: Run) -> dict[str, GrpoArm]:
    """The GRPO arms trained in `run` (notebook 06), by name: `models/<arm>/` groups and compute record."""
    found = {}
    for name in GRPO_ARMS:
        path = run.root / "models" / name
        if (path / training.GROUPS).is_file():
            compute = models.read_manifest(path).get("compute", {})
            found[name] = GrpoArm(name, pd.read_csv(path / training.GROUPS), compute)
    return found


def untrained(arms: dict[str, GrpoArm]) -> dict[str, str]:
    """The arms that did not train, with why (`plateau.did_not_train`)."""
    reasons = {name: plateau.did_not_train(arm.compute) for name, arm in arms.items()}
    return {name: why for name, why in reasons.items() if why is not None}


def did_not_train(reasons: dict[str, str]) -> str:
    """The verdict for a claim resting on the arms in `reasons`, which did not train (`UNTRAINED`'s shape)."""
    if len(reasons) == 1:
        ((name, why),) = reasons.items()
        return f"{name} did not train ({why})"
    return f"{' and '.join(reasons)} did not train ({'; '.join(f'{n}: {w}' for n, w in reasons.items())})"


def mark_untrained(found: list[Claim] | pd.DataFrame, reasons: dict[str, str]) -> list[Claim]:
    """`found` with the verdict of each claim resting on an arm in `reasons` (`RESTS_ON`) made "<arm> did not train
    (<why>)", the verdict its numbers alone give kept at the head of its evidence; a claim not tested, or saying
    already that an arm did not train, is left as it is (marking twice changes nothing)."""
    marked = []
    for claim in claims_list(found):
        on = {n: w for n, w in reasons.items() if n in RESTS_ON.get(report.label(claim.claim), ())}
        if on and not claim.verdict.startswith("not tested") and not UNTRAINED.match(claim.verdict):
            claim = Claim(
                claim.claim, did_not_train(on), f"the numbers alone: {claim.verdict}; {claim.evidence}"
            )
        marked.append(claim)
    return marked


def _format_rates(graded: pd.DataFrame, variant: str) -> pd.Series:
    """Per problem, the share of `variant`'s samples with the format the prompt asks for (`has_format`: a
    `#### <number>`), the format rate of every table."""
    return graded[graded["variant"] == variant].groupby("problem_id")["has_format"].mean()


def _grpo_claim(graded: pd.DataFrame) -> Claim:
    """Needs GRPO to raise the format rate first (else it did not train as the claim assumes), then a strict gain
    (interval above 0), then asks whether the lenient gain is smaller; both gains are measured with intervals."""
    claim = "3. GRPO's gain under the strict checker shrinks under the lenient one (pass@1)"
    if "GRPO" not in set(graded["variant"]):
        return Claim(claim, "not tested (GRPO not trained)", "-")
    base_format = _format_rates(graded, BASE)
    grpo_format = _format_rates(graded, "GRPO")
    raised = metrics.paired_bootstrap_diff(grpo_format, base_format.loc[grpo_format.index])
    raised_text = f"GRPO minus base, format rate {report.format_interval(*raised, signed=True)}"
    if verdict(*raised[1:]) != HOLDS:
        why = f"its format rate on the test problems is not above the base's: {raised_text}"
        return Claim(claim, f"GRPO did not train ({why})", raised_text)
    gain, found = {}, {}
    for checker in ("strict", "lenient"):
        grpo = metrics.per_problem_scores(graded[graded["variant"] == "GRPO"], checker)["pass@1"]
        base = metrics.per_problem_scores(graded[graded["variant"] == BASE], checker)["pass@1"]
        gain[checker] = (grpo - base.loc[grpo.index]).to_numpy()
        found[checker] = metrics.paired_bootstrap_diff(gain[checker], np.zeros_like(gain[checker]))
    diff, low, high = metrics.paired_bootstrap_diff(gain["strict"], gain["lenient"])
    evidence = "; ".join(
        [
            raised_text,
            *(
                f"GRPO minus base, pass@1 {c} {report.format_interval(*f, signed=True)}"
                for c, f in found.items()
            ),
            f"strict gain minus lenient gain {report.format_interval(diff, low, high, signed=True)}",
        ]
    )
    strict_gain = verdict(*found["strict"][1:])
    if strict_gain == FAILS:
        return Claim(claim, "does not hold (GRPO is worse than the base under the strict checker)", evidence)
    unsure = (
        "inconclusive (the strict gain's interval includes 0)" if strict_gain != HOLDS else verdict(low, high)
    )
    return Claim(claim, joint([strict_gain, verdict(low, high)], unsure), evidence)


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
        f"right share of round 1's samples: {report.format_number(first_rate.mean())}; "
        f"of round 2's: {report.format_number(second_rate.mean())}; "
        f"round 2 minus round 1 {report.format_interval(diff, low, high, signed=True)} "
        "(SFT_1 was trained on some of these problems)"
    )
    return Claim(claim, verdict(low, high), evidence)


def _source_claim(graded: pd.DataFrame, source: str, k: int, n_boot: int = 1000) -> Claim:
    """Claim 5 for one source: SFT on its verified answers beats SFT_1 on pass@1 and maj_half@k (lenient)."""
    label = {"SFT_teacher": "5a", "SFT_gold": "5b"}[source]
    maj_half = metrics.MAJ_HALF.format(k=k)
    claim = (
        f"{label}. SFT on a stronger source's verified answers beats rejection sampling on the model's own "
        f"({source} vs SFT_1, pass@1 and {maj_half}, lenient)"
    )
    present = set(graded["variant"])
    if not {source, "SFT_1"} <= present:
        return Claim(
            claim, f"not tested ({' and '.join(sorted({source, 'SFT_1'} - present))} not trained)", "-"
        )
    table = versus(graded, source, "SFT_1", "lenient", n_boot).loc[["pass@1", maj_half]]
    evidence = "; ".join(f"{source} minus SFT_1, {m} {_interval(r)}" for m, r in table.iterrows())
    found = joint([verdict(r.lo, r.hi) for r in table.itertuples()], "inconclusive (interval includes 0)")
    return Claim(claim, found, evidence)


def reward_sparsity(groups: pd.DataFrame, n_boot: int = 1000) -> dict[str, Any]:
    """GRPO's signal, from its groups (`plateau.GroupRewards`): the share of groups whose k rewards were all equal
    (no advantage, no gradient), on the total reward (format included, as TRL's `frac_reward_zero_std`) and on the
    correctness reward alone, each with a 95 % bootstrap interval over groups, and the optimizer steps in which no
    group carried a signal."""
    if groups.empty:
        raise ValueError("GRPO recorded no group: was it trained by this series' GRPO trainer?")
    signal = groups.groupby("step")["zero_spread"].all()
    return {
        "total": plateau.zero_spread_share(groups, "zero_spread", n_boot, metrics.BOOT_SEED),
        "correctness": plateau.zero_spread_share(
            groups, "correctness_reward_zero_spread", n_boot, metrics.BOOT_SEED
        ),
        "steps": len(signal),
        "steps_without_signal": int(signal.sum()),
    }


def _sparsity_claim(arm: GrpoArm | None, n_boot: int = 1000) -> Claim:
    """On the total reward (the claim's verdict) and on the correctness reward alone, from GRPO's groups."""
    claim = (
        '6. "GRPO\'s reward is sparse": most groups of k completions carry no learning signal (share of groups '
        "with zero reward spread above 0.5)"
    )
    if arm is None:
        return Claim(claim, "not tested (GRPO not trained)", "-")
    try:
        found = reward_sparsity(arm.groups, n_boot)
    except ValueError as err:
        return Claim(claim, "not tested (no group in GRPO's record)", str(err))
    total, alone = found["total"], found["correctness"]
    evidence = (
        f"share of groups with zero reward spread {report.format_interval(total['share'], total['lo'], total['hi'])} "
        f"(on the total reward, format included; {total['groups']} groups); "
        f"of the correctness reward alone {report.format_interval(alone['share'], alone['lo'], alone['hi'])}; "
        f"optimizer steps in which no group carried a signal: {found['steps_without_signal']} of {found['steps']}"
    )
    return Claim(claim, verdict(total["lo"], total["hi"], 0.5), evidence)


def efficiency(
    graded: pd.DataFrame, cost: pd.DataFrame, metric: str = "pass@1", n_boot: int = 1000
) -> pd.DataFrame:
    """Each trained variant's gain over the base (lenient, paired, with its interval) per million total tokens
    (sampled + trained + teacher, lineage included), ranked.

    A gain per token ranks only a gain that is there: variants whose interval lies above 0 come first, by gain per
    token; the others follow by their gain, with `gain per M tokens` left empty (a loss or no gain divided by a
    small cost would otherwise rank a cheap variant below an expensive one with the same loss).
    """
    rows = []
    for variant in cost.index:
        if variant not in set(graded["variant"]):
            continue
        gain = versus(graded, variant, BASE, "lenient", n_boot).loc[metric]
        tokens = float(cost.loc[variant, "total_tokens"])
        measured = verdict(gain["lo"], gain["hi"]) == HOLDS
        per = 1e6 / max(tokens, 1.0) if measured else np.nan
        rows.append(
            {
                "variant": variant,
                f"{metric} gain": gain["diff"],
                "lo": gain["lo"],
                "hi": gain["hi"],
                "gain measured": measured,
                "total_tokens": int(tokens),
                "gain per M tokens": gain["diff"] * per,
                "per M lo": gain["lo"] * per,
                "per M hi": gain["hi"] * per,
            }
        )
    table = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["variant"]).set_index("variant")
    if table.empty:
        return table
    return table.sort_values(["gain measured", "gain per M tokens", f"{metric} gain"], ascending=False)


def _per_token(
    graded: pd.DataFrame, ranked: pd.DataFrame, first: str, second: str, n_boot: int = 1000
) -> tuple[str, str]:
    """The verdict on "`first` gains more pass@1 per token than `second`" and its evidence, from `efficiency`'s
    table. Only a measured gain (interval above 0) is divided by its cost: without one for `first`, the verdict is
    "does not hold" when `second` has one and inconclusive otherwise. With one, each problem's gain over the base
    is divided by the variant's total tokens and the two are paired over problems."""
    evidence = "; ".join(
        f"{v} pass@1 gain per million tokens "
        f"{report.format_interval(r['gain per M tokens'], r['per M lo'], r['per M hi'], signed=True)}"
        if r["gain measured"]
        else f"{v} pass@1 gain (none measured, not ranked) "
        f"{report.format_interval(r['pass@1 gain'], r['lo'], r['hi'], signed=True)}"
        for v, r in ranked.loc[[first, second]].iterrows()
    )
    if not ranked.loc[first, "gain measured"]:
        found = (
            FAILS if ranked.loc[second, "gain measured"] else f"inconclusive (no measured gain for {first})"
        )
        return found, evidence
    base = metrics.per_problem_scores(graded[graded["variant"] == BASE], "lenient")["pass@1"]
    per_token = {}
    for variant in (first, second):
        scores = metrics.per_problem_scores(graded[graded["variant"] == variant], "lenient")["pass@1"]
        tokens = max(float(ranked.loc[variant, "total_tokens"]), 1.0)
        per_token[variant] = (scores - base.loc[scores.index]) * 1e6 / tokens
    ahead = per_token[first]
    diff, low, high = metrics.paired_bootstrap_diff(ahead, per_token[second].loc[ahead.index], n_boot)
    evidence += (
        f"; {first} minus {second}, pass@1 gain per million tokens "
        f"{report.format_interval(diff, low, high, signed=True)}"
    )
    return verdict(low, high), evidence


def _efficiency_claim(graded: pd.DataFrame, ranked: pd.DataFrame | None, n_boot: int = 1000) -> Claim:
    """SFT_teacher's gain per token against GRPO's (`_per_token`)."""
    claim = (
        "7. Gains per unit of compute: SFT on a teacher's verified answers gains more per token than GRPO "
        "(pass@1, lenient)"
    )
    if ranked is None or not {"SFT_teacher", "GRPO"} <= set(graded["variant"]) & set(ranked.index):
        return Claim(claim, "not tested (SFT_teacher or GRPO not trained)", "-")
    return Claim(claim, *_per_token(graded, ranked, "SFT_teacher", "GRPO", n_boot))


def _filtered_claim(
    graded: pd.DataFrame, ranked: pd.DataFrame | None, arms: dict[str, GrpoArm], n_boot: int = 1000
) -> Claim:
    """GRPO_filtered against GRPO: fewer groups with zero spread (on the total reward, each arm's groups
    resampled apart: they trained on different prompts), and more pass@1 gain per token (`_per_token`, paired over
    test problems). Holds when both hold."""
    claim = (
        "8. GRPO on the problems the base solves sometimes (GRPO_filtered) gets more signal than GRPO: fewer groups "
        "with zero reward spread, and more pass@1 gain per token (lenient)"
    )
    present = set(graded["variant"]) & set(arms) & (set(ranked.index) if ranked is not None else set())
    if ranked is None or not set(GRPO_ARMS) <= present:
        return Claim(claim, f"not tested ({' or '.join(GRPO_ARMS)} not trained)", "-")
    shares = {
        n: plateau.zero_spread_share(arms[n].groups, n_boot=n_boot, seed=metrics.BOOT_SEED) for n in GRPO_ARMS
    }
    diff, low, high = plateau.share_difference(
        arms["GRPO_filtered"].groups, arms["GRPO"].groups, n_boot, metrics.BOOT_SEED
    )
    sparse = "; ".join(
        f"{n}, share of groups with zero reward spread {report.format_interval(f['share'], f['lo'], f['hi'])} "
        f"({f['groups']} groups)"
        for n, f in shares.items()
    )
    sparse += f"; GRPO_filtered minus GRPO, zero-spread share {report.format_interval(diff, low, high, signed=True)}"
    fewer = below(verdict(low, high))
    per_token, evidence = _per_token(graded, ranked, "GRPO_filtered", "GRPO", n_boot)
    return Claim(
        claim, joint([fewer, per_token], "inconclusive (an interval includes 0)"), f"{sparse}; {evidence}"
    )


def claims_frame(found: list[Claim] | pd.DataFrame) -> pd.DataFrame:
    """The claims as a frame, one row per claim: claim, verdict, evidence (a frame already is one)."""
    return found if isinstance(found, pd.DataFrame) else pd.DataFrame([c.__dict__ for c in found])


def claims_list(found: list[Claim] | pd.DataFrame) -> list[Claim]:
    """The claims as `Claim`s (a frame's rows, or the list itself)."""
    if isinstance(found, pd.DataFrame):
        return [Claim(**row) for row in found[["claim", "verdict", "evidence"]].to_dict("records")]
    return list(found)


def claims_section(found: list[Claim] | pd.DataFrame, k: int) -> str:
    """The part of REPORT.md between the claims markers: each claim's verdict in plain words, then the numbers
    behind them (`report.claims_section`; `k`: 08's samples per problem)."""
    return report.claims_section(claims_frame(found), k)


# The parts of REPORT.md that 09_large_k rewrites after 08 wrote it: the claims table and 09's own section.
CLAIMS_START, CLAIMS_END = (
    "<!-- claims: 08_evaluation, claim 1 at large k by 09_large_k -->",
    "<!-- claims: end -->",
)
LARGE_K_START, LARGE_K_END = "<!-- large-k: written by 09_large_k -->", "<!-- large-k: end -->"
LARGE_K_PENDING = (
    "Claim 1 at large k (pass@k to hundreds of samples, `09_large_k`) has not run yet on this run directory."
)


def replace_block(text: str, start: str, end: str, body: str, where: Path, fix: str) -> str:
    """`text` with what lies between the lines `start` and `end` replaced by `body`; missing markers raise
    `BadInput` naming `where` and `fix` (a report written by an older version of 08)."""
    head, found_start, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise BadInput(
            f"{where} has no {start!r} ... {end!r} part (written by an older version of 08_evaluation). {fix}"
        )
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_report(
    run: Run,
    results: pd.DataFrame,
    paired_table: pd.DataFrame,
    found: list[Claim] | pd.DataFrame,
    cost: pd.DataFrame,
    breakdown: pd.DataFrame,
    checks: tuple[pd.DataFrame, str],
    figures: list[Path],
    missing: list[str],
    ranked: pd.DataFrame | None = None,
    large_k_section: str | None = None,
) -> Path:
    """`REPORT.md` in the run directory: the verdicts in plain words first, then the numbers behind them, the
    tables (rounded by `report`'s rule), the figures, and the settings and date.

    `checks`: `agreement.disagreements` of the graded samples and `agreement.examples_markdown` of them;
    `ranked`: `efficiency`'s table (gain per unit of compute); `large_k_section`: 09's part, when it has run
    (`large_k.report_section`). The claims and 09's part sit between markers, which 09 rewrites.
    """
    k = run.cfg.k
    names = list(dict.fromkeys(results["variant"]))
    parts = [
        f"# Report: {run.root.name}",
        "",
        f"{len(names)} models ({', '.join(names)}) answered the same {int(results['n_problems'].iloc[0])} test "
        f"problems {k} times each, with the same seeds, temperature and token limit; intervals are 95 % bootstrap "
        f"intervals over problems. {metrics.MAJ_DEFINITIONS.format(k=k)}",
        "",
        "## The original study's claims, tested on this run",
        "",
        *([f"**Not evaluated (not trained yet):** {', '.join(missing)}.", ""] if missing else []),
        CLAIMS_START,
        claims_section(found, k),
        CLAIMS_END,
        "",
        f"{VERDICT_RULE} The full claims, with their thresholds and checkers, are in `eval/claims.csv`.",
        "",
        LARGE_K_START,
        large_k_section or LARGE_K_PENDING,
        LARGE_K_END,
        "",
        "## Results",
        "",
        markdown_table(report.results_table(results, k)),
        "",
        "## Each variant minus the base (paired over problems)",
        "",
        markdown_table(report.paired_table(paired_table)),
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
        "## Cost (tokens sampled + trained + a teacher's, including the variants each one needed)",
        "",
        markdown_table(cost) if not cost.empty else "No trained variant.",
        "",
        "## Gain per unit of compute (pass@1 gain over the base, lenient, per million tokens, ranked)",
        "",
        markdown_table(report.efficiency_table(ranked))
        if ranked is not None and not ranked.empty
        else "No trained variant.",
        "",
        "## Figures",
        "",
        *[f"![{p.stem}]({p.relative_to(run.root).as_posix()})" for p in figures],
        "",
        "## Settings",
        "",
        f"Written {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} by `08_evaluation`. "
        f"Profile `{run.cfg.profile}`, config `{config.config_hash(run.cfg)}`: {run.describe()}.",
        "",
        "```json",
        json.dumps(config.identity(run.cfg), indent=2),  # 09's own settings are in its part above
        "```",
    ]
    return atomic_write_text(run.root / "REPORT.md", "\n".join(parts) + "\n")


def training_rounds(run: Run) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The base's and SFT_1's graded training samples (rounds 1 and 2), or None before notebook 05 ran."""
    if not (run.root / "samples" / "sft1_train.jsonl").is_file():
        return None
    return (
        run.graded_samples("samples/base_train.jsonl", split="train", step="01_sampling"),
        run.graded_samples("samples/sft1_train.jsonl", split="train", step="05_second_round"),
    )
