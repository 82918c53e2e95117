"""Evaluation tables, claims and the report on synthetic graded samples: `pytest tests/unit/test_evaluation.py`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import agreement, evaluation, files, judge, metrics, plots, runs


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
    assert set(table["metric"]) == {"pass@1", "pass@2", "maj@2"}
    row = table[(table["checker"] == "lenient") & (table["metric"] == "maj@2")].iloc[0]
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
    base = graded_variant("base", [[True, False, False, False]] * n)  # pass@4 = 1, maj@4 = 0
    sft = graded_variant("SFT_1", [[True, True, True, False]] * n)  # same pass@4, maj@4 = 1
    # GRPO: right as often as the base, but always formatted where the base never is -> strict gain only
    base_unformatted = graded_variant("base", [[True, False, False, False]] * n, [[False] * 4] * n)
    grpo = graded_variant("GRPO", [[True, False, False, False]] * n, [[True] * 4] * n)
    rounds = (
        graded_variant("r1", rng.random((n, 4)) < 0.1).assign(variant="base"),
        graded_variant("r2", rng.random((n, 4)) < 0.9).assign(variant="SFT_1"),
    )
    found = claims_for(base, [sft], rounds)
    assert found["1"].verdict == "holds" and found["2"].verdict == "holds"
    assert found["4"].verdict == "holds" and "SFT_1 +1.000" in found["2"].evidence
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
    worse_grpo = graded_variant("GRPO", [[False] * 4] * n)
    assert claims_for(base, [worse_grpo])["3"].verdict.startswith("does not hold (GRPO is worse")
    same = claims_for(base, [graded_variant("GRPO", [[True, True, True, False]] * n)])["3"]
    assert same.verdict == "inconclusive (the strict gain's interval includes 0)"
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
    assert present == ["base", "SFT_1", "SFT_1_SFT_2", "SFT_2", "GRPO"] and missing == [
        "ORPO_1",
        "SFT_1_ORPO_2",
    ]
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
    figure = plots.save(plots.pass_at_k_curves(results), run.path("figures/07_pass_at_k.png"))
    plots.save(plots.metric_bars(results, 2), run.path("figures/07_metrics.png"))
    plots.save(plots.format_breakdown(evaluation.format_breakdown(graded)), run.path("figures/07_format.png"))
    checks = (agreement.disagreements(graded), agreement.examples_markdown(graded))
    breakdown = evaluation.format_breakdown(graded)
    report = evaluation.write_report(
        run, results, table, found, pd.DataFrame(), breakdown, checks, [figure], ["GRPO"]
    )
    text = report.read_text()
    assert report == run.root / "REPORT.md"
    for needle in (
        "| base | strict |",
        "| SFT_1 | lenient |",
        "figures/07_pass_at_k.png",
        "Not evaluated",
        "GRPO",
        "## Where the checkers disagree",
        "| strict vs lenient |",
    ):
        assert needle in text
    assert all(c.claim in text and c.verdict in text for c in found)
    assert '"k": 2' in text


def test_a_misconfigured_judge_stops_07_before_any_sampling(
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
    monkeypatch.setattr(evaluation.models, "resolve_backend", lambda: ("transformers", "no GPU"))
    assert evaluation.evaluate_all(run, ["base"])["variant"].tolist() == ["base"]


def test_markdown_table_rounds_floats() -> None:
    text = evaluation.markdown_table(pd.DataFrame({"a": [0.12345], "b": ["x"]}, index=["r"]))
    assert text.splitlines() == ["| index | a | b |", "|---|---|---|", "| r | 0.123 | x |"]
