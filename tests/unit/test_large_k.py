"""Notebook 09's numbers: pass@k to large k, crossovers, coverage, claim 1 at large k and the report it rewrites."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config, evaluation, large_k, pipeline, plots, runs, sampling
from helpers.evaluation import Claim
from helpers.files import BadInput


def graded_counts(counts: dict[str, list[int]], n: int) -> pd.DataFrame:
    """Graded samples with `counts[variant][i]` right samples of `n` on problem i (same under both checkers)."""
    rows = []
    for variant, per_problem in counts.items():
        for problem, c in enumerate(per_problem):
            for idx in range(n):
                right = idx < c
                answer = "7" if right else "3"
                rows.append(
                    {
                        "variant": variant,
                        "problem_id": f"p{problem:02d}",
                        "sample_idx": idx,
                        "gold": "7",
                        "strict_correct": right,
                        "lenient_correct": right,
                        "lmeval_strict_correct": right,
                        "pred_strict": answer,
                        "pred_lenient": answer,
                        "pred_lmeval_strict": answer,
                        "has_format": True,
                        "n_tokens": 10,
                    }
                )
    return pd.DataFrame(rows)


def exact_pass(n: int, c: int, k: int) -> float:
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def test_the_k_grid_doubles_up_to_n_and_ends_at_n() -> None:
    assert large_k.k_grid(1) == [1]
    assert large_k.k_grid(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert large_k.k_grid(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    with pytest.raises(ValueError, match="n=0"):
        large_k.k_grid(0)


def test_curves_are_the_unbiased_estimator_averaged_over_problems() -> None:
    counts = [0, 1, 3, 16]
    graded = graded_counts({"base": counts}, 16)
    curves = large_k.curves(graded, n_boot=200)
    lenient = curves[curves["checker"] == "lenient"].set_index("k")
    assert list(lenient.index) == [1, 2, 4, 8, 16]
    for k, row in lenient.iterrows():
        assert row["pass@k"] == pytest.approx(np.mean([exact_pass(16, c, k) for c in counts]))
        assert row["lo"] <= row["pass@k"] <= row["hi"]
    assert lenient.loc[16, "pass@k"] == 0.75  # pass@n: solved at least once
    assert set(curves["checker"]) == {"strict", "lenient", "lmeval_strict"}  # every checker graded


def test_overtaken_from_is_the_first_k_above_after_which_the_base_is_never_below() -> None:
    diffs = np.array(
        [
            [-0.1, 0.2, 0.3],  # above from k=2
            [0.1, -0.2, 0.3],  # above, below, above again: from k=4
            [-0.1, 0.2, 0.0],  # above at 2, then a tie (both at 0.8, say): the crossover stays 2
            [0.1, 0.1, 0.1],  # above everywhere
            [-0.1, 0.0, 0.0],  # meets and ties, never above: none
            [0.1, 0.2, -0.05],  # below again at n: none
        ]
    )
    assert large_k.overtaken_from(diffs, [1, 2, 4]).tolist() == [2, 4, 2, 1, math.inf, math.inf]


def test_the_base_overtakes_a_variant_that_only_sharpened_it() -> None:
    """The variant always solves half the problems and never the rest; the base solves each with 2 of 16 samples:
    above at k=1 for the variant, below from k=8 (pass@k of 2 in 16: 0.45 at k=4, 0.77 at k=8)."""
    graded = graded_counts({"base": [2] * 20, "SFT_1": [16] * 10 + [0] * 10}, 16)
    table = large_k.crossovers(graded, n_boot=300).set_index("checker").loc["lenient"]
    assert table["crossover_k"] == 8
    assert table["crossover_lo"] <= 8 <= table["crossover_hi"]
    assert table["crossover"].startswith("8 [")
    assert table["pass@1 diff"] == pytest.approx(0.5 - 2 / 16)
    assert table["pass@n diff"] == pytest.approx(-0.5) and table["hi"] < 0
    assert (table["base pass@n"], table["variant pass@n"]) == (1.0, 0.5)


def test_no_crossover_when_the_variant_stays_above_or_ties() -> None:
    graded = graded_counts({"base": [1] * 6 + [0] * 2, "SFT_1": [16] * 8}, 16)
    table = large_k.crossovers(graded, n_boot=100).set_index("checker").loc["lenient"]
    assert np.isnan(table["crossover_k"]) and np.isnan(table["crossover_hi"])
    assert table["crossover"] == "none up to 16 [>16, >16]"
    tie = graded_counts({"base": [2] * 8, "SFT_1": [16] * 8}, 16)  # both reach 1.0 at k=16: no overtaking
    assert large_k.crossovers(tie, n_boot=100)["crossover"].iloc[0].startswith("none up to 16")


def test_coverage_lists_the_problems_only_one_of_the_two_solves_with_their_counts() -> None:
    graded = graded_counts({"base": [3, 0, 1, 0], "SFT_1": [0, 5, 2, 0]}, 8)
    table = large_k.coverage(graded, n_boot=100)
    lenient = table[table["checker"] == "lenient"].set_index("variant")
    assert lenient.loc["base", "coverage"] == 0.5 and lenient.loc["SFT_1", "solved"] == 2
    row = lenient.loc["SFT_1"]
    assert (row["base_only"], row["variant_only"]) == (1, 1)
    assert row["base_only_problems"] == "p00 (3/8)" and row["variant_only_problems"] == "p01 (5/8)"
    assert pd.isna(lenient.loc["base", "base_only"])


def test_samples_of_other_problems_or_sizes_are_refused() -> None:
    graded = graded_counts({"base": [1, 2], "SFT_1": [1, 2, 3]}, 4)
    with pytest.raises(ValueError, match="different problems"):
        large_k.crossovers(graded, n_boot=10)
    uneven = graded_counts({"base": [1, 2]}, 4).iloc[:-1]
    with pytest.raises(ValueError, match="sample every problem n times"):
        large_k.curves(uneven, n_boot=10)


def judged(graded: pd.DataFrame, missing: tuple[str, ...] = ()) -> Claim:
    return large_k.claim(
        large_k.crossovers(graded, n_boot=200), large_k.coverage(graded, n_boot=200), 4, missing
    )


def test_claim_1_at_large_k_asks_whether_a_variant_reaches_what_the_base_never_does() -> None:
    sharpened = graded_counts({"base": [2] * 200, "SFT_1": [16] * 100 + [0] * 100}, 16)
    found = judged(sharpened, ("GRPO",))
    assert found.claim.startswith(large_k.LABEL) and "200 test problems x 16 samples" in found.claim
    assert "k=4" in found.claim and found.verdict == evaluation.HOLDS
    assert found.evidence.startswith(
        "SFT_1, share of problems only it solves 0.000 [0.000, 0.019] (0 of 200 problems, the base alone 100"
    )
    # none of 20 is no proof of none: 0 of 20 allows up to 0.16
    assert judged(graded_counts({"base": [2] * 20, "SFT_1": [16] * 20}, 16)).verdict.startswith(
        "inconclusive"
    )
    assert "pass@16 minus base -0.50 [-0.57, -0.43], crossover 8 [" in found.evidence
    assert found.evidence.endswith("not trained, not tested: GRPO")
    widened = graded_counts({"base": [1] * 10 + [0] * 30, "SFT_1": [4] * 40}, 16)
    assert judged(widened).verdict == evaluation.FAILS
    # the same net pass@n as the base, but by other problems: the net gain is 0, the claim still fails
    swapped = graded_counts({"base": [3] * 20 + [0] * 20, "SFT_1": [0] * 20 + [3] * 20}, 16)
    assert large_k.crossovers(swapped, n_boot=10)["pass@n diff"].iloc[0] == 0
    assert judged(swapped).verdict == evaluation.FAILS
    one = graded_counts({"base": [2] * 15 + [0], "SFT_1": [2] * 16}, 16)  # 1 of 16: interval reaches 0.05
    assert judged(one).verdict.startswith("inconclusive")
    assert judged(graded_counts({"base": [1, 2]}, 4)).verdict.startswith("not tested")


def test_the_large_k_row_goes_before_claim_1_once() -> None:
    claims = [Claim("1. No method", "holds", "x"), Claim("2. SFT", "holds", "y")]
    large = pd.DataFrame([Claim(f"{large_k.LABEL} at 16", "does not hold", "z").__dict__])
    merged = large_k.with_claim(claims, large)
    assert list(merged["claim"]) == [f"{large_k.LABEL} at 16", "1. No method", "2. SFT"]
    again = large_k.with_claim(merged, large.assign(verdict="holds"))
    assert list(again["claim"]) == list(merged["claim"]) and again["verdict"].iloc[0] == "holds"


def test_the_subset_is_seeded_and_inside_the_test_problems(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "a", "smoke", {"n_test": 4, "large_k_problems": 3})
    subset = large_k.problems(run)
    test_ids = run.problems("test")["id"]
    assert len(subset) == 3 and set(subset["id"]) < set(test_ids)
    assert [i for i in test_ids if i in set(subset["id"])] == subset["id"]  # in test-set order
    again = runs.open_run(tmp_path / "b", "smoke", {"n_test": 4, "large_k_problems": 3})
    assert large_k.problems(again)["id"] == subset["id"]
    more = runs.open_run(tmp_path / "d", "smoke", {"n_test": 4, "large_k_problems": 4})
    assert set(subset["id"]) < set(
        large_k.problems(more)["id"]
    )  # a larger subset keeps the smaller one's samples
    many = {"n_test": 4, "large_k_problems": 9}  # more than there are: all of them
    whole = runs.open_run(tmp_path / "c", "smoke", many)
    assert large_k.problems(whole)["id"] == whole.problems("test")["id"]


def test_09_starts_from_08s_samples_of_the_subset_drawn_with_its_settings(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke", {"n_test": 4, "large_k_problems": 2})
    subset, test = large_k.problems(run), run.problems("test")
    settings = sampling.describe_model(run.cfg.model, None, "auto")
    settings |= {"seed": run.cfg.seed, "temperature": run.cfg.temperature, "top_p": run.cfg.top_p}
    settings["max_new_tokens"] = run.cfg.max_new_tokens
    rows = [
        {
            "problem_id": pid,
            "sample_idx": i,
            "completion": f"{pid} {i}",
            "n_tokens": 3,
            "finish_reason": "answer",
        }
        | settings
        for pid in test["id"]
        for i in range(run.cfg.k)
    ]
    rows[0] = rows[0] | {"seed": 99}  # drawn with other settings: not 09's to reuse
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    run.path("samples/test_base.jsonl").write_text(lines)
    copied = large_k.start_from_evaluation(run, "base", subset)
    started = sampling.read_samples(run.root / large_k.samples_file("base"))
    expected = [r for r in rows if r["problem_id"] in set(subset["id"]) and r["seed"] == run.cfg.seed]
    assert copied == len(started) == len(expected) and list(started["completion"]) == [
        r["completion"] for r in expected
    ]
    assert large_k.start_from_evaluation(run, "base", subset) == 0  # a file begun is 09's own
    assert large_k.start_from_evaluation(run, "SFT_1", subset) == 0  # no samples of 08 to start from


def _saved_run(tmp_path: Path) -> runs.Run:
    """A run where 08 wrote its claims and report and 09 saved its tables and a figure."""
    run = runs.open_run(tmp_path / "run", "smoke")
    graded = graded_counts({"base": [2] * 6, "SFT_1": [16] * 3 + [0] * 3}, 16)
    claims = pd.DataFrame(
        [Claim("1. No method", "holds", "x").__dict__, Claim("2. SFT", "holds", "").__dict__]
    )
    claims.to_csv(run.path("eval/claims.csv"), index=False)
    report = "\n".join(
        [
            "# Report",
            evaluation.CLAIMS_START,
            evaluation.claims_section(claims, run.cfg.k),
            evaluation.CLAIMS_END,
            "",
            evaluation.LARGE_K_START,
            evaluation.LARGE_K_PENDING,
            evaluation.LARGE_K_END,
            "## Results",
        ]
    )
    run.path("REPORT.md").write_text(report + "\n")
    curves, crossover = large_k.curves(graded, n_boot=50), large_k.crossovers(graded, n_boot=50)
    covered = large_k.coverage(graded, n_boot=50)
    found = large_k.claim(crossover, covered, run.cfg.k)
    tables = {"curves": curves, "crossover": crossover, "coverage": covered}
    large_k.save(run, {**tables, "claim": pd.DataFrame([found.__dict__])})
    plots.save(plots.large_k_curves(curves, "lenient"), run.path(large_k.FIGURE.format(checker="lenient")))
    return run


def test_update_report_puts_both_claim_1_verdicts_and_09s_part_in_the_report(tmp_path: Path) -> None:
    run = _saved_run(tmp_path)
    large_k.check_ready(run)
    found = Claim(**pd.read_csv(run.root / large_k.TABLES["claim"], keep_default_na=False).iloc[0].to_dict())
    large_k.update_report(run, found)
    large_k.update_report(run, found)  # a rerun replaces, never adds
    claims = pd.read_csv(run.root / "eval" / "claims.csv", keep_default_na=False)
    assert list(claims["claim"]) == [found.claim, "1. No method", "2. SFT"]
    text = (run.root / "REPORT.md").read_text()
    assert text.count(found.claim) == 1 and "| 1. | 1. No method |" in text and "| 1. | x |  |  |" in text
    assert text.index("- **1 at large k.** Given many tries") < text.index("- **1.** No training method")
    assert evaluation.LARGE_K_PENDING not in text and "### Claim 1 at large k" in text
    assert "figures/09_pass_at_k_lenient.png" in text and "p03 (2/16), p04 (2/16), p05 (2/16)" in text
    assert text.endswith("## Results\n")
    # a rerun of 08 writes the same two parts from 09's saved files (`with_saved_claim`, `report_section`)
    eighth = [Claim("1. No method", "holds", "x"), Claim("2. SFT", "holds", "")]
    again = large_k.with_saved_claim(run, eighth)
    assert again.equals(claims)
    section = evaluation.claims_section(again, run.cfg.k)
    assert f"{evaluation.CLAIMS_START}\n{section}\n{evaluation.CLAIMS_END}" in text
    part = large_k.report_section(run)
    assert f"{evaluation.LARGE_K_START}\n{part}\n{evaluation.LARGE_K_END}" in text
    assert (
        "| SFT_1 | lmeval_strict |" not in part
    )  # strict and lenient in the report, every checker in the CSVs
    assert (
        not re.search(r"\d\.\d{5,}", part) and "| 3 | 6 | 3 | 0 | 0.00 [0.00, 0.39] |" in part
    )  # rounded; counts stay whole


def test_update_report_refuses_a_report_without_its_markers(tmp_path: Path) -> None:
    run = _saved_run(tmp_path)
    (run.root / "REPORT.md").write_text("# Report of an older version\n")
    before = (run.root / "eval" / "claims.csv").read_bytes()
    rerun = (
        f"Rerun 08 \\(python -m helpers.pipeline run --profile smoke --run-dir {run.root} --only 08 --force"
    )
    with pytest.raises(BadInput, match=rerun):
        large_k.check_ready(run)  # before any sampling
    with pytest.raises(BadInput, match=rerun):
        large_k.update_report(run, Claim(f"{large_k.LABEL} x", "holds", "-"))
    assert (run.root / "eval" / "claims.csv").read_bytes() == before  # nothing half-written


def test_09_without_08_stops_before_sampling_and_names_the_step(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    with pytest.raises(FileNotFoundError, match="Run 08_evaluation first .*--only 08"):
        large_k.check_ready(run)
    assert large_k.with_saved_claim(run, [Claim("1. x", "holds", "-")])["claim"].tolist() == ["1. x"]


def test_the_pipeline_counts_09_done_by_the_tables_it_saves() -> None:
    step = next(s for s in pipeline.STEPS if s.name == "09_large_k")
    assert set(step.outputs) == set(large_k.TABLES.values()) and step.reads == config.LATER_STEP_SETTINGS


def test_the_large_k_figure_has_a_log_k_axis_and_every_variant() -> None:
    graded = graded_counts({"base": [2] * 4, "SFT_1": [16, 0, 0, 0]}, 16)
    fig = plots.large_k_curves(large_k.curves(graded, n_boot=20), "strict")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "base 95 %",
        "base",
        "SFT_1",
    ]
    with pytest.raises(ValueError, match="no judge rows"):
        plots.large_k_curves(large_k.curves(graded, n_boot=20), "judge")
