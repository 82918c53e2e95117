"""Evaluation tables, claims and the report on synthetic graded samples: `pytest tests/unit/test_evaluation.py`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import agreement, evaluation, files, judge, metrics, plots, report, runs


def graded_variant(
    variant: str, correct: list[list[bool]], formatted: list[list[bool]] | None = None
) -> pd.DataFrame:
    """Graded samples of one variant: lenient verdicts per problem and sample; strict = lenient and formatted."""
    rows = []
    for pid, samples in enumerate(correct):
        for idx, right in enumerate(samples):
            fmt = formatted[pid][idx] if formatted else True
            rows.append(
                {
                    "variant": variant,
                    "problem_id": f"p{pid:02d}",
                    "sample_idx": idx,
                    "gold": "1",
                    "pred_strict": "1" if right and fmt else None,
                    "pred_lenient": "1" if right else "2",
                    "has_format": fmt,
                    "strict_correct": right and fmt,
                    "lenient_correct": right,
                    "n_tokens": 10,
                }
            )
    return pd.DataFrame(rows)


def test_paired_differences_are_variant_minus_base_per_checker_and_metric() -> None:
    base = graded_variant("base", [[False, False]] * 10)
    better = graded_variant("SFT_1", [[True, True]] * 10)
    table = evaluation.paired(pd.concat([base, better]), n_boot=50)
    assert set(table["checker"]) == {"strict", "lenient"}
    assert set(table["metric"]) == {"pass@1", "pass@2", "maj_half@2", "maj_vote@2"}
    for metric in ("maj_half@2", "maj_vote@2"):  # every sample right: both maj@k go from 0 to 1
        row = table[(table["checker"] == "lenient") & (table["metric"] == metric)].iloc[0]
        assert (row["variant"], row["diff"], row["lo"], row["hi"]) == ("SFT_1", 1.0, 1.0, 1.0)


def test_paired_refuses_variants_sampled_on_other_problems() -> None:
    base = graded_variant("base", [[False, False]] * 3)
    other = graded_variant("SFT_1", [[True, True]] * 4)
    with pytest.raises(ValueError, match="SFT_1 and the base were sampled on different test problems"):
        evaluation.paired(pd.concat([base, other]), n_boot=10)


def test_format_breakdown_shares() -> None:
    graded = graded_variant("GRPO", [[True, True, False, False]], [[True, False, True, False]])
    table = evaluation.format_breakdown(graded)
    assert table.loc["GRPO"].tolist() == [0.25, 0.25, 0.25, 0.25]
    assert list(table.columns) == list(evaluation.BREAKDOWN)


def claims_for(base: pd.DataFrame, others: list[pd.DataFrame], rounds=None) -> dict[str, evaluation.Claim]:
    graded = pd.concat([base, *others])
    table = evaluation.paired(graded, n_boot=200)
    return {c.claim[0]: c for c in evaluation.claims(table, graded, rounds, k=4)}


def test_claims_hold_when_the_intervals_say_so() -> None:
    rng = np.random.default_rng(0)
    n = 40
    base = graded_variant("base", [[True, False, False, False]] * n)  # pass@4 = 1, maj_half@4 = 0
    sft = graded_variant("SFT_1", [[True, True, True, False]] * n)  # same pass@4, maj_half@4 = 1
    # GRPO: right as often as the base, but always formatted where the base never is -> strict gain only
    base_unformatted = graded_variant("base", [[True, False, False, False]] * n, [[False] * 4] * n)
    grpo = graded_variant("GRPO", [[True, False, False, False]] * n, [[True] * 4] * n)
    rounds = (
        graded_variant("r1", rng.random((n, 4)) < 0.1).assign(variant="base"),
        graded_variant("r2", rng.random((n, 4)) < 0.9).assign(variant="SFT_1"),
    )
    found = claims_for(base, [sft], rounds)
    assert found["1"].verdict == "holds" and found["2"].verdict == "holds"
    assert (
        found["4"].verdict == "holds"
        and "SFT_1 minus base, maj_half@4 +1.00 [+1.00, +1.00]" in found["2"].evidence
    )
    assert "maj_half@4" in found["2"].claim
    assert found["3"].verdict.startswith("not tested")
    assert claims_for(base_unformatted, [grpo])["3"].verdict == "holds"


def test_claims_fail_or_stay_inconclusive_honestly() -> None:
    n = 40
    base = graded_variant("base", [[True, True, True, False]] * n)
    worse = graded_variant("ORPO_1", [[False] * 4] * n)
    found = claims_for(base, [worse])
    assert found["2"].verdict == "does not hold"
    assert found["4"].verdict.startswith("not tested")
    noisy = graded_variant("SFT_1", [[i % 2 == 0] * 4 for i in range(n)])
    mixed = graded_variant("base", [[i % 3 == 0] * 4 for i in range(n)])
    assert claims_for(mixed, [noisy])["2"].verdict == "inconclusive (interval includes 0)"
    half_formatted = graded_variant("base", [[True, True, True, False]] * n, [[True, True, False, False]] * n)
    worse_grpo = graded_variant("GRPO", [[False] * 4] * n)  # formatted always: the format rate rose
    assert claims_for(half_formatted, [worse_grpo])["3"].verdict.startswith("does not hold (GRPO is worse")
    noisy_grpo = graded_variant("GRPO", [[i % 2 == 0] * 4 for i in range(n)])  # strict gain +-0.5 a problem
    same = claims_for(half_formatted, [noisy_grpo])["3"]
    assert same.verdict == "inconclusive (the strict gain's interval includes 0)"
    assert "GRPO minus base, pass@1 lenient -0.25 [" in same.evidence  # both gains measured, with intervals
    unformatted = claims_for(base, [graded_variant("GRPO", [[True, True, True, False]] * n)])["3"]
    assert unformatted.verdict == (
        "GRPO did not train (its format rate on the test problems is not above the base's: GRPO minus base, "
        "format rate +0.00 [+0.00, +0.00])"
    )
    gain = graded_variant("SFT_2", [[True] * 4] * n)
    assert claims_for(graded_variant("base", [[False] * 4] * n), [gain])["1"].verdict == "does not hold"


def manifest(run_dir: Path, name: str, parent, sampled_by, compute: dict) -> None:
    target = run_dir / "models" / name
    target.mkdir(parents=True)
    (target / "manifest.json").write_text(
        json.dumps(
            {"base_model": "m", "parent": parent, "data": {"sampled_by": sampled_by}, "compute": compute}
        )
    )


def test_costs_add_up_the_variants_each_one_needed(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    own = {"tokens_sampled_for_data": 100, "tokens_trained": 10, "wall_s": 1.0}
    manifest(run.root, "SFT_1", None, "m", own)
    manifest(run.root, "SFT_2", None, "m+SFT_1", {**own, "tokens_sampled_for_data": 50})
    manifest(run.root, "SFT_1_SFT_2", "SFT_1", "m+SFT_1", {**own, "tokens_sampled_for_data": 50})
    manifest(run.root, "GRPO", None, None, {"tokens_sampled_for_data": 0, "tokens_sampled_in_training": 7,
                                            "tokens_trained": 3, "wall_s": 2.0})  # fmt: skip
    present, missing = evaluation.variants(run)
    assert present == ["base", "SFT_1", "SFT_1_SFT_2", "SFT_2", "GRPO"]
    assert missing == ["ORPO_1", "SFT_1_ORPO_2", "GRPO_filtered", "SFT_gold", "SFT_teacher"]
    cost = evaluation.costs(run, present)
    assert cost.loc["SFT_1", "total_tokens"] == 110 and cost.loc["SFT_1", "needs"] == "-"
    assert cost.loc["SFT_2", "total_tokens"] == 60 + 110 and cost.loc["SFT_2", "needs"] == "SFT_1"
    assert cost.loc["SFT_1_SFT_2", "total_tokens"] == 170
    assert cost.loc["GRPO", "total_tokens"] == 10 and cost.loc["GRPO", "total_wall_s"] == 2.0


def test_report_names_every_variant_claim_and_figure(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke", k=2)
    graded = pd.concat(
        [graded_variant("base", [[True, False]] * 5), graded_variant("SFT_1", [[True, True]] * 5)],
        ignore_index=True,
    )
    results = metrics.summarize(graded, n_boot=20)
    table = evaluation.paired(graded, n_boot=20)
    found = evaluation.claims(table, graded, None, k=2)
    figure = plots.save(plots.pass_at_k_curves(results), run.path("figures/08_pass_at_k.png"))
    plots.save(plots.metric_bars(results, 2), run.path("figures/08_metrics.png"))
    plots.save(plots.format_breakdown(evaluation.format_breakdown(graded)), run.path("figures/08_format.png"))
    checks = (agreement.disagreements(graded), agreement.examples_markdown(graded))
    breakdown = evaluation.format_breakdown(graded)
    cost = pd.DataFrame({"total_tokens": [1000]}, index=["SFT_1"])
    ranked = evaluation.efficiency(graded, cost, n_boot=20)
    report = evaluation.write_report(
        run, results, table, found, pd.DataFrame(), breakdown, checks, [figure], ["GRPO"], ranked
    )
    text = report.read_text()
    assert "## Gain per unit of compute" in text and "| SFT_1 |" in text and "nan" not in text
    assert report == run.root / "REPORT.md"
    for needle in (
        "| base | strict |",
        "| SFT_1 | lenient |",
        "figures/08_pass_at_k.png",
        "Not evaluated",
        "GRPO",
        "## Where the checkers disagree",
        "| strict vs lenient |",
    ):
        assert needle in text
    assert all(c.claim in text and c.verdict in text for c in found)
    assert '"k": 2' in text and "maj_half@2" in text and "maj_vote@2" in text
    claims_part = text.split(evaluation.CLAIMS_START + "\n")[1].split("\n" + evaluation.CLAIMS_END)[0]
    assert claims_part == evaluation.claims_section(found, 2)  # the part 09 rewrites, between its markers
    first_screen = text.split("## Results")[0]
    assert "`maj_half@2` (the original study's maj@k)" in first_screen  # both maj@k defined where they appear
    assert first_screen.index("- **1.**") < first_screen.index("The numbers behind the verdicts")
    assert not re.search(r"\d\.\d{5,}", text)  # no raw floats anywhere
    assert f"{evaluation.LARGE_K_START}\n{evaluation.LARGE_K_PENDING}\n{evaluation.LARGE_K_END}" in text


def test_a_misconfigured_judge_stops_08_before_any_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    monkeypatch.setattr(
        evaluation, "evaluate", lambda *a, **k: pytest.fail("sampled before checking the judge")
    )
    with pytest.raises(judge.JudgeError, match="unreachable at 127.0.0.1:9"):
        evaluation.evaluate_all(run, ["base"])


def test_a_judge_with_every_verdict_cached_is_not_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1")  # down, but nothing is left to ask it
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    rows = [{"problem_id": str(i), "sample_idx": 0, "completion_sha": "x", "model": "m", "judge_correct": True}
            for i in range(len(run.problems("test")) * run.cfg.k)]  # fmt: skip
    files.write_jsonl(run.path("eval/judge_base.jsonl"), rows)
    monkeypatch.setattr(evaluation, "evaluate", lambda run, name, shared: pd.DataFrame({"variant": [name]}))
    monkeypatch.setattr(
        evaluation.models, "resolve_backend", lambda backend="auto": ("transformers", "no GPU")
    )
    assert evaluation.evaluate_all(run, ["base"])["variant"].tolist() == ["base"]


def test_markdown_table_rounds_floats() -> None:
    text = report.markdown_table(pd.DataFrame({"a": [0.12345], "b": ["x"], "c": [np.nan]}, index=["r"]))
    assert text.splitlines() == ["| index | a | b | c |", "|---|---|---|---|", "| r | 0.123 | x | - |"]


def test_one_verdict_rule_for_every_claim() -> None:
    assert evaluation.verdict(0.01, 0.2) == "holds" and evaluation.verdict(-0.2, -0.01) == "does not hold"
    assert evaluation.verdict(-0.1, 0.1) == "inconclusive (interval includes 0)"
    assert evaluation.verdict(0.4, 0.6, 0.5) == "inconclusive (interval includes 0.5)"
    assert evaluation.below(evaluation.verdict(0.6, 0.7, 0.5)) == "does not hold"
    assert evaluation.joint(["holds", "holds"], "?") == "holds"
    assert evaluation.joint(["holds", "does not hold"], "?") == "does not hold"
    assert evaluation.joint(["holds", "inconclusive (interval includes 0)"], "?") == "?"


def test_claim_5_sets_each_source_against_sft_1() -> None:
    n = 40
    base = graded_variant("base", [[False] * 4] * n)
    sft_1 = graded_variant("SFT_1", [[True, False, False, False]] * n)
    teacher = graded_variant("SFT_teacher", [[True, True, True, False]] * n)  # pass@1, maj_half@4 above SFT_1
    gold = graded_variant("SFT_gold", [[False] * 4] * n)  # below it
    found = claims_for(base, [sft_1, teacher, gold])
    graded = pd.concat([base, sft_1, teacher, gold])
    five = {c.claim[:2]: c for c in evaluation.claims(evaluation.paired(graded, 50), graded, None, 4)}
    assert (
        five["5a"].verdict == "holds"
        and "SFT_teacher minus SFT_1, pass@1 +0.50 [+0.50, +0.50]" in five["5a"].evidence
    )
    assert five["5b"].verdict == "does not hold" and "SFT_gold vs SFT_1" in five["5b"].claim
    assert found["6"].verdict.startswith("not tested") and found["7"].verdict.startswith("not tested")
    alone = {c.claim[:2]: c for c in evaluation.claims(evaluation.paired(pd.concat([base, teacher]), 50),
                                                     pd.concat([base, teacher]), None, 4)}  # fmt: skip
    assert alone["5a"].verdict == "not tested (SFT_1 not trained)"


def test_claim_6_reads_grpo_reward_sparsity_from_its_groups_total_and_correctness_alone() -> None:
    groups = pd.DataFrame(
        {
            "step": [1, 1, 2, 2, 3, 3, 4, 4],
            "zero_spread": [True, True, True, False, True, True, True, True],
            "correctness_reward_zero_spread": [True] * 8,
        }
    )
    found = evaluation.reward_sparsity(groups, n_boot=200)
    assert found["total"]["share"] == 0.875 and found["correctness"]["share"] == 1.0
    assert (found["steps_without_signal"], found["steps"]) == (3, 4)  # step 2 had one group with a signal
    claim = evaluation._sparsity_claim(evaluation.GrpoArm("GRPO", groups, {}), n_boot=200)
    assert claim.claim.startswith("6.") and "3 of 4" in claim.evidence and "8 groups" in claim.evidence
    assert "of the correctness reward alone 1.00 [1.00, 1.00]" in claim.evidence

    def arm(shares: list[bool]) -> evaluation.GrpoArm:
        table = pd.DataFrame({"step": range(len(shares)), "zero_spread": shares})
        return evaluation.GrpoArm("GRPO", table.assign(correctness_reward_zero_spread=True), {})

    assert evaluation._sparsity_claim(arm([True, True, True, False] * 20)).verdict == "holds"
    assert evaluation._sparsity_claim(arm([False, False, False, True] * 20)).verdict == "does not hold"
    assert evaluation._sparsity_claim(arm([])).verdict.startswith("not tested (no group")


def test_claim_7_ranks_gain_per_token_and_sets_the_teacher_against_grpo() -> None:
    n = 40
    base = graded_variant("base", [[False] * 4] * n)
    teacher = graded_variant("SFT_teacher", [[True, True, False, False]] * n)  # +0.5 for 1M tokens
    grpo = graded_variant("GRPO", [[True, True, True, False]] * n)  # +0.75 for 10M tokens
    graded = pd.concat([base, teacher, grpo])
    cost = pd.DataFrame({"total_tokens": [1_000_000, 10_000_000]}, index=["SFT_teacher", "GRPO"])
    ranked = evaluation.efficiency(graded, cost, n_boot=50)
    assert ranked.index.tolist() == ["SFT_teacher", "GRPO"]
    assert ranked.loc["GRPO", "gain per M tokens"] == pytest.approx(0.075)
    assert ranked.loc["SFT_teacher", "total_tokens"] == 1_000_000
    found = evaluation._efficiency_claim(graded, ranked, n_boot=50)
    assert found.verdict == "holds" and "SFT_teacher pass@1 gain per million tokens +0.50" in found.evidence
    assert evaluation._efficiency_claim(graded, ranked.drop("GRPO")).verdict.startswith("not tested")


def test_costs_count_teacher_tokens_apart_and_in_the_total(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    compute = {"tokens_sampled_for_data": 0, "tokens_trained": 10, "teacher_tokens": 500,
               "teacher_requests": 40, "optimizer_steps": 3, "wall_s": 1.0}  # fmt: skip
    manifest(run.root, "SFT_teacher", None, "teacher-model", compute)
    manifest(run.root, "SFT_gold", None, "arithmetic solutions", {**compute, "teacher_tokens": 0})
    cost = evaluation.costs(run, ["base", "SFT_gold", "SFT_teacher"])
    assert (
        cost.loc["SFT_teacher", "own_teacher_tokens"] == 500
        and cost.loc["SFT_teacher", "total_tokens"] == 510
    )
    assert (
        cost.loc["SFT_teacher", "own_teacher_requests"] == 40 and cost.loc["SFT_gold", "total_tokens"] == 10
    )
    assert cost.loc["SFT_gold", "own_optimizer_steps"] == 3


def test_a_loss_is_never_divided_by_its_cost() -> None:
    n = 40
    base = graded_variant("base", [[True, True, False, False]] * n)
    cheap_loss = graded_variant("SFT_teacher", [[False] * 4] * n)  # -0.5 for 1k tokens
    dear_loss = graded_variant("GRPO", [[True, False, False, False]] * n)  # -0.25 for 1M tokens
    graded = pd.concat([base, cheap_loss, dear_loss])
    cost = pd.DataFrame({"total_tokens": [1_000, 1_000_000]}, index=["SFT_teacher", "GRPO"])
    ranked = evaluation.efficiency(graded, cost, n_boot=50)
    assert ranked.index.tolist() == ["GRPO", "SFT_teacher"] and ranked["gain per M tokens"].isna().all()
    found = evaluation._efficiency_claim(graded, ranked, n_boot=50)
    assert found.verdict == "inconclusive (no measured gain for SFT_teacher)"
    assert "SFT_teacher pass@1 gain (none measured, not ranked) -0.50" in found.evidence
    gaining = graded_variant("GRPO", [[True, True, True, False]] * n)
    gained = pd.concat([base, cheap_loss, gaining])
    found = evaluation._efficiency_claim(gained, evaluation.efficiency(gained, cost, n_boot=50), n_boot=50)
    assert found.verdict == "does not hold"


def test_claim_3_goes_through_the_one_rule() -> None:
    n = 40
    # GRPO formats half its answers where the base formats none: the strict gain (+0.5) lies below the lenient
    # gain (+1), so the claim fails although both gains hold
    base = graded_variant("base", [[False] * 4] * n, [[False] * 4] * n)
    grpo = graded_variant("GRPO", [[True] * 4] * n, [[True, True, False, False]] * n)
    found = claims_for(base, [grpo])["3"]
    assert found.verdict == "does not hold" and "strict gain minus lenient gain -0.50" in found.evidence
    assert "GRPO minus base, format rate +0.50 [+0.50, +0.50]" in found.evidence


def _arm(name: str = "GRPO", rises: int = 1, zero_spread: float = 0.5, n: int = 16) -> evaluation.GrpoArm:
    """A GRPO arm's record: n groups of which a `zero_spread` share had no spread, and its compute."""
    flat = [True] * round(n * zero_spread) + [False] * (n - round(n * zero_spread))
    groups = pd.DataFrame(
        {"step": range(n), "zero_spread": flat, "correctness_reward_zero_spread": [True] * n}
    )
    compute = {"prompts_consumed": 32, "prompts_available": 64, "stopped_early_at_step": 8, "window": 8}
    compute.update(windows=4, reward_rises=rises, first_window_reward=0.2, last_window_reward=0.25)
    return evaluation.GrpoArm(name, groups, compute)


UNTRAINED_WHY = (
    "stopped by its plateau rule after 32 of 64 prompts; its mean reward over windows of 8 prompts never rose above "
    "its first window's beyond the noise (first 0.20, last 0.25)"
)


def test_claims_resting_on_an_untrained_grpo_say_so_in_their_verdict() -> None:
    n = 40
    base = graded_variant("base", [[True, False, False, False]] * n, [[False] * 4] * n)
    grpo = graded_variant("GRPO", [[True, False, False, False]] * n, [[True] * 4] * n)  # a strict gain
    teacher = graded_variant("SFT_teacher", [[True, True, False, False]] * n)
    graded = pd.concat([base, grpo, teacher])
    cost = pd.DataFrame({"total_tokens": [1_000_000, 10_000_000]}, index=["SFT_teacher", "GRPO"])
    ranked = evaluation.efficiency(graded, cost, n_boot=50)
    table = evaluation.paired(graded, n_boot=50)
    trained = {c.claim[:2]: c for c in evaluation.claims(table, graded, None, 4, {"GRPO": _arm()}, ranked)}
    found = {
        c.claim[:2]: c for c in evaluation.claims(table, graded, None, 4, {"GRPO": _arm(rises=0)}, ranked)
    }
    for label in ("3.", "6.", "7."):
        assert found[label].verdict == f"GRPO did not train ({UNTRAINED_WHY})"
        assert evaluation.UNTRAINED.match(found[label].verdict)["arms"] == "GRPO"
        assert (
            found[label].evidence == f"the numbers alone: {trained[label].verdict}; {trained[label].evidence}"
        )
    assert trained["3."].verdict == "holds"  # what the numbers alone say, kept in the evidence
    for label in ("1.", "2.", "5a", "8."):
        assert found[label] == trained[label]  # claims that do not rest on GRPO (8: not tested) are untouched
    again = evaluation.mark_untrained(
        evaluation.claims_frame(list(found.values())), {"GRPO": "another reason"}
    )
    assert again == list(found.values())  # marking twice changes nothing
    untested = evaluation.Claim("3. x", "not tested (GRPO not trained)", "-")
    assert evaluation.mark_untrained([untested], {"GRPO": "r"})[0].verdict.startswith("not tested")
    both = evaluation.mark_untrained(
        [evaluation.Claim("8. x", "holds", "e")], {"GRPO": "a", "GRPO_filtered": "b"}
    )
    assert both[0].verdict == "GRPO and GRPO_filtered did not train (GRPO: a; GRPO_filtered: b)"


def test_claim_8_sets_the_filtered_arm_against_grpo_on_signal_and_gain_per_token() -> None:
    n = 40
    base = graded_variant("base", [[True, False, False, False]] * n)
    grpo = graded_variant("GRPO", [[True, True, False, False]] * n)  # +0.25 for 10M tokens
    filtered = graded_variant("GRPO_filtered", [[True, True, True, False]] * n)  # +0.5 for 1M tokens
    graded = pd.concat([base, grpo, filtered])
    cost = pd.DataFrame({"total_tokens": [10_000_000, 1_000_000]}, index=["GRPO", "GRPO_filtered"])
    ranked = evaluation.efficiency(graded, cost, n_boot=50)
    arms = {"GRPO": _arm(zero_spread=0.9), "GRPO_filtered": _arm("GRPO_filtered", zero_spread=0.1)}
    found = evaluation._filtered_claim(graded, ranked, arms, n_boot=50)
    assert found.verdict == "holds" and found.claim.startswith("8.")
    assert (
        "GRPO_filtered minus GRPO, zero-spread share -0.75 [" in found.evidence
        and "(16 groups)" in found.evidence
    )
    assert "GRPO_filtered minus GRPO, pass@1 gain per million tokens +0.47 [" in found.evidence
    sparser = {"GRPO": _arm(zero_spread=0.1), "GRPO_filtered": _arm("GRPO_filtered", zero_spread=0.9)}
    assert evaluation._filtered_claim(graded, ranked, sparser, n_boot=50).verdict == "does not hold"
    assert evaluation._filtered_claim(graded, ranked, {"GRPO": arms["GRPO"]}).verdict.startswith("not tested")


def test_grpo_arms_are_read_from_their_saved_records(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    assert evaluation.grpo_arms(run) == {}
    manifest(run.root, "GRPO", None, None, {"prompts_consumed": 2, "reward_rises": 0})
    assert evaluation.grpo_arms(run) == {}  # no groups recorded: not an arm of this series' GRPO
    (run.root / "models" / "GRPO" / "groups.csv").write_text("prompt,reward,zero_spread\n1,0.5,False\n")
    arms = evaluation.grpo_arms(run)
    assert list(arms) == ["GRPO"] and arms["GRPO"].compute["prompts_consumed"] == 2
    assert arms["GRPO"].groups["reward"].tolist() == [0.5] and len(arms["GRPO"].groups) == 1
