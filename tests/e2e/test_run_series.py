"""End to end: papermill runs the notebooks in order on the smoke profiles with the real CPU model and data,
then we check what they wrote. The series is `tests/conftest.py`'s `smoke`, run once per session (the fault plan
compares its killed run with the same one). Minutes, not seconds: `pytest tests/e2e -m slow`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from smoke_series import FAKE_SECRETS, run_pipeline

from helpers import (
    answers,
    console,
    evaluation,
    files,
    grpo_prompts,
    large_k,
    metrics,
    models,
    pipeline,
    runs,
    sampling,
    training,
)

pytestmark = pytest.mark.slow


def test_every_existing_step_ran_and_left_its_executed_notebook(smoke) -> None:
    run_dir, done = smoke
    timings = json.loads((run_dir / "timings.json").read_text())
    existing = [s for s in pipeline.STEPS if s.notebook.exists()]
    assert list(timings) == [s.name for s in existing]
    for step in existing:
        assert (run_dir / "executed" / f"{step.name}.ipynb").exists()
        assert all((run_dir / o).exists() for o in step.outputs)
        assert "image/png" in (run_dir / "executed" / f"{step.name}.ipynb").read_text()  # plots shown inline
        # one line: its name, its time, what it wrote
        [line] = [line for line in done.stdout.splitlines() if line.startswith(f"{step.name} ")]
        assert re.match(rf"{step.name} +\d[\w ]* s  ", line), line
        assert all(name in line for name in console.written(run_dir, step.outputs, math.inf)), line
        assert (run_dir / "logs" / f"{step.name}.log").exists()
    # papermill's path lines, the kernel's TCP warning and torch's NUMA warnings go to the step logs alone
    for noise in ("Input Notebook", "Executing notebook", "running over TCP", "NUMA binding"):
        assert noise not in done.stdout + done.stderr
    assert "running over TCP" in (run_dir / "logs" / "01_sampling.log").read_text()
    assert len(done.stdout.splitlines()) == len(pipeline.STEPS) + 1  # and the summary
    executed = (run_dir / "executed" / "01_sampling.ipynb").read_text()
    assert "generated arithmetic toy set" in executed  # every notebook shows which data set it uses


def test_no_secret_from_the_environment_lands_in_any_output(smoke) -> None:
    run_dir, done = smoke
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(written) > 50 and any(p.suffix == ".ipynb" for p in written)
    for name, secret in FAKE_SECRETS.items():
        hits = [str(p) for p in written if secret.encode() in p.read_bytes()]
        hits += ["the pipeline's output"] * (secret in done.stdout + done.stderr)
        assert hits == [], f"{name}'s value is written in {hits}"


def test_samples_cover_every_problem_k_times(smoke) -> None:
    run_dir, _ = smoke
    run = runs.open_run(run_dir, "smoke")
    samples = sampling.read_samples(run_dir / "samples" / "base_train.jsonl")
    problems = run.problems("train")
    assert len(samples) == run.cfg.n_train * run.cfg.k
    assert set(samples["problem_id"]) == set(problems["id"])
    assert not samples.duplicated(["problem_id", "sample_idx"]).any()
    assert sampling.read_stats(run_dir / "samples" / "base_train.jsonl")["completions"] == len(samples)
    assert (run_dir / "figures" / "01_completion_lengths.png").stat().st_size > 0


@pytest.mark.parametrize(("samples_file", "round_name"), [("base_train", "round1"), ("sft1_train", "round2")])
def test_training_data_is_consistent_with_the_samples(smoke, samples_file: str, round_name: str) -> None:
    run_dir, _ = smoke
    run = runs.open_run(run_dir, "smoke")
    golds = dict(zip(run.problems("train")["id"], run.problems("train")["gold"], strict=True))
    texts = {(r.problem_id, r.sample_idx): r.completion for r in sampling.read_samples(
        run_dir / "samples" / f"{samples_file}.jsonl").itertuples()}  # fmt: skip
    sft = files.read_jsonl(run_dir / "datasets" / f"sft_{round_name}.jsonl")
    pairs = files.read_jsonl(run_dir / "datasets" / f"orpo_{round_name}.jsonl")
    assert sft, "the smoke profile must find correct samples to train on"
    for row in sft:
        text = row["completion"][0]["content"]
        assert texts[(row["problem_id"], row["sample_idx"])] == text
        assert answers.grade(text, golds[row["problem_id"]]).lenient_correct
    assert max(sum(r["problem_id"] == p for r in sft) for p in golds) <= run.cfg.max_per_problem
    for pair in pairs:
        gold = golds[pair["problem_id"]]
        assert texts[(pair["problem_id"], pair["chosen_idx"])] == pair["chosen"][0]["content"]
        assert texts[(pair["problem_id"], pair["rejected_idx"])] == pair["rejected"][0]["content"]
        assert answers.grade(pair["chosen"][0]["content"], gold).lenient_correct
        assert not answers.grade(pair["rejected"][0]["content"], gold).lenient_correct


def test_the_distillation_data_are_the_gold_solutions_and_verified_teacher_answers(smoke) -> None:
    run_dir, _ = smoke
    run = runs.open_run(run_dir, "smoke")
    problems = run.problems("train")
    teacher = sampling.read_samples(run_dir / "samples" / "teacher_train.jsonl")
    base = sampling.read_samples(run_dir / "samples" / "base_train.jsonl")
    assert len(teacher) == run.cfg.n_train * run.cfg.k and set(teacher["seed"]) == {run.cfg.seed + 1}
    assert set(teacher["completion"]) != set(base["completion"])  # the teacher's own draws, not the base's
    golds = dict(zip(problems["id"], problems["gold"], strict=True))
    gold_rows = files.read_jsonl(run_dir / "datasets" / "sft_gold.jsonl")
    assert [r["problem_id"] for r in gold_rows] == problems["id"]
    texts = {(r.problem_id, r.sample_idx): r.completion for r in teacher.itertuples()}
    rows = files.read_jsonl(run_dir / "datasets" / "sft_teacher.jsonl")
    assert rows, "the smoke's teacher must verify some answers"
    for row in gold_rows + rows:
        assert answers.grade(row["completion"][0]["content"], golds[row["problem_id"]]).lenient_correct
    for row in rows:
        assert texts[(row["problem_id"], row["sample_idx"])].strip() == row["completion"][0]["content"]
    assert max(sum(r["problem_id"] == p for r in rows) for p in golds) <= run.cfg.max_per_problem


def test_second_round_samples_come_from_sft_1(smoke) -> None:
    run_dir, _ = smoke
    samples = sampling.read_samples(run_dir / "samples" / "sft1_train.jsonl")
    assert set(samples["model"]) == {"smollm2-135m+SFT_1"}
    assert len(samples) == runs.open_run(run_dir, "smoke").cfg.n_train * runs.open_run(run_dir, "smoke").cfg.k


def test_every_variant_reloads_and_training_changed_their_weights(smoke) -> None:
    run_dir, _ = smoke
    base, _ = models.load_model(models.SMOLLM2_ALIAS)
    base_weights = base.state_dict()
    for name in training.VARIANTS:
        tuned, _ = models.load_model(models.SMOLLM2_ALIAS, adapter=run_dir / "models" / name)
        changed = [
            key for key, value in tuned.state_dict().items() if not torch.equal(value, base_weights[key])
        ]
        assert changed, f"{name}: reloaded weights equal the base model's"
        assert all("proj" in key for key in changed), f"{name}: LoRA should only touch the projections"


EXPECTED_LINEAGE = {
    "SFT_1": ("sft", None, "smollm2-135m"),
    "ORPO_1": ("orpo", None, "smollm2-135m"),
    "SFT_1_SFT_2": ("sft", "SFT_1", "smollm2-135m+SFT_1"),
    "SFT_1_ORPO_2": ("orpo", "SFT_1", "smollm2-135m+SFT_1"),
    "SFT_2": ("sft", None, "smollm2-135m+SFT_1"),
    "GRPO": ("grpo", None, None),
    "GRPO_filtered": ("grpo", None, "smollm2-135m"),  # its prompts were filtered by the base's samples in 01
    "SFT_gold": ("sft", None, "arithmetic solutions"),
    "SFT_teacher": ("sft", None, "smollm2-135m"),  # the smoke's teacher: the base model, with its own seed
}


@pytest.mark.parametrize("name", training.VARIANTS)
def test_manifest_lineage_and_compute_accounting(smoke, name: str) -> None:
    run_dir, _ = smoke
    variant = run_dir / "models" / name
    manifest = models.read_manifest(variant)
    method, parent, sampled_by = EXPECTED_LINEAGE[name]
    assert (manifest["method"], manifest["parent"], manifest["data"]["sampled_by"]) == (
        method,
        parent,
        sampled_by,
    )
    assert manifest["base_model"] == "smollm2-135m" and manifest["name"] == name
    compute = manifest["compute"]
    assert compute["optimizer_steps"] > 0 and compute["backward_passes"] >= compute["optimizer_steps"]
    assert compute["tokens_trained"] > 0 and compute["wall_s"] > 0
    if name in ("GRPO", "GRPO_filtered"):
        assert compute["tokens_sampled_in_training"] > 0
        assert 0 < compute["prompts_consumed"] <= compute["prompts_available"] == manifest["data"]["rows"]
        groups = pd.read_csv(variant / training.GROUPS)
        assert (
            len(groups) == compute["prompts_consumed"] and groups["step"].max() == compute["optimizer_steps"]
        )
        assert compute["windows"] == len(groups) // compute["window"] and compute["reward_rises"] >= 0
        if name == "GRPO":
            assert compute["tokens_sampled_for_data"] == 0
        else:  # the filter read 01's samples: their tokens count, and it kept the problems solved sometimes
            samples = sampling.read_samples(run_dir / manifest["data"]["samples_file"])
            assert compute["tokens_sampled_for_data"] == samples["n_tokens"].sum() > 0
            run = runs.open_run(run_dir, "smoke", read_only=True)
            kept = int(grpo_prompts.pass_rates(run)["sometimes"].sum())
            assert manifest["data"]["rows"] == min(kept, run.cfg.grpo_max_rows) > 0
    elif name == "SFT_gold":
        assert compute["tokens_sampled_for_data"] == 0 and manifest["data"]["samples_file"] is None
        assert manifest["data"]["rows"] == runs.open_run(run_dir, "smoke").cfg.n_train
    elif name == "SFT_teacher":
        samples = sampling.read_samples(run_dir / manifest["data"]["samples_file"])
        assert compute["tokens_sampled_for_data"] == 0 and compute["teacher_requests"] == 0  # no endpoint
        assert compute["teacher_tokens"] == samples["n_tokens"].sum() > 0
    else:
        samples = sampling.read_samples(run_dir / manifest["data"]["samples_file"])
        assert compute["tokens_sampled_for_data"] == samples["n_tokens"].sum()
        assert manifest["data"]["rows"] == len(files.read_jsonl(run_dir / manifest["data"]["file"]))
    history = pd.read_csv(variant / "log_history.csv")
    assert history["step"].max() == compute["optimizer_steps"]
    assert (run_dir / "figures" / f"train_{name}.png").stat().st_size > 0
    assert list((run_dir / "tb" / name).glob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoints" / name).exists()


EVAL_FIELDS = {"problem_id", "sample_idx", "completion", "pred_strict", "pred_lenient", "pred_lmeval_strict",
               "pred_lmeval_flexible", "has_format", "strict_correct", "lenient_correct", "lmeval_strict_correct",
               "lmeval_flexible_correct", "n_tokens"}  # fmt: skip


def judged(run_dir: Path) -> bool:
    """Whether 08 ran with the local judge (a server could start on this machine)."""
    return "LLM judge skipped" not in (run_dir / "executed" / "08_evaluation.ipynb").read_text()


def test_results_match_the_per_sample_files(smoke) -> None:
    run_dir, _ = smoke
    cfg = runs.open_run(run_dir, "smoke").cfg
    k = cfg.k
    results = pd.read_csv(run_dir / "eval" / "results.csv").set_index(["variant", "checker"])
    names = ["base", *training.VARIANTS]
    checkers = [c for c in metrics.EVAL_CHECKERS if c != metrics.JUDGE or judged(run_dir)]
    assert sorted(results.index) == sorted((v, c) for v in names for c in checkers)
    for name in names:
        rows = files.read_jsonl(run_dir / "eval" / f"samples_{name}.jsonl")
        assert len(rows) == cfg.n_test * k and set(rows[0]) >= EVAL_FIELDS
        samples = pd.DataFrame(rows)
        for checker in checkers:
            correct = samples.groupby("problem_id")[f"{checker}_correct"].sum()
            row = results.loc[(name, checker)]
            assert row["n_problems"] == cfg.n_test
            assert row["pass@1"] == pytest.approx((correct / k).mean())
            assert row[f"pass@{k}"] == pytest.approx((correct > 0).mean())
            assert row[f"maj_half@{k}"] == pytest.approx((correct * 2 > k).mean())
            vote = row[f"maj_vote@{k}"]  # NaN for the judge: it gives verdicts, no answers to vote on
            assert pd.isna(vote) if checker == metrics.JUDGE else 0 <= vote <= 1


def test_paired_table_figures_and_report_name_every_variant(smoke) -> None:
    run_dir, _ = smoke
    paired = pd.read_csv(run_dir / "eval" / "paired.csv")
    checkers = [c for c in metrics.EVAL_CHECKERS if c != metrics.JUDGE or judged(run_dir)]
    # pass@1, pass@k, maj_half@k and maj_vote@k per checker; the judge has no answers to vote on
    assert len(paired) == len(training.VARIANTS) * (4 * len(checkers) - (metrics.JUDGE in checkers))
    assert set(paired["variant"]) == set(training.VARIANTS) and set(paired["checker"]) == set(checkers)
    assert (paired["lo"] <= paired["diff"]).all() and (paired["diff"] <= paired["hi"]).all()
    for figure in ("06_grpo_rewards", "08_pass_at_k", "08_metrics", "08_format_breakdown", "08_cost_vs_gain"):
        assert (run_dir / "figures" / f"{figure}.png").stat().st_size > 0
    report = (run_dir / "REPORT.md").read_text()
    for name in ("base", *training.VARIANTS):
        assert f"| {name} |" in report
    for claim in (
        "1. No method raises",
        "2. SFT and ORPO raise",
        "3. GRPO's gain",
        "4. Second-round samples",
        "5a. SFT on a stronger source's verified answers",
        "(SFT_gold vs SFT_1",
        '6. "GRPO\'s reward is sparse"',
        "7. Gains per unit of compute",
        "8. GRPO on the problems the base solves sometimes",
    ):
        assert claim in report
    assert "not tested" not in report.split("## Results")[0]  # every claim has its variants in the smoke
    assert "figures/08_metrics.png" in report and "## Gain per unit of compute" in report
    ranked = pd.read_csv(run_dir / "eval" / "efficiency.csv")
    assert set(ranked["variant"]) == set(training.VARIANTS)
    measured = ranked[ranked["gain measured"]]
    assert ranked["gain measured"].is_monotonic_decreasing  # measured gains first, ranked by gain per token
    assert measured["gain per M tokens"].is_monotonic_decreasing and (measured["lo"] > 0).all()
    assert ranked.loc[~ranked["gain measured"], "gain per M tokens"].isna().all()


def test_the_checkers_disagreements_are_counted_and_shown(smoke) -> None:
    run_dir, _ = smoke
    checkers = [c for c in metrics.EVAL_CHECKERS if c != metrics.JUDGE or judged(run_dir)]
    table = pd.read_csv(run_dir / "eval" / "agreement.csv")
    assert len(table) == (1 + len(training.VARIANTS)) * len(checkers) * (len(checkers) - 1) // 2
    for variant, part in table.groupby("variant"):
        samples = pd.DataFrame(files.read_jsonl(run_dir / "eval" / f"samples_{variant}.jsonl"))
        row = part.set_index("pair").loc["strict vs lenient"]
        assert row["differ"] == (samples["strict_correct"] != samples["lenient_correct"]).sum()
        assert row["only_first"] == 0  # strict-correct is always lenient-correct
    report = (run_dir / "REPORT.md").read_text()
    assert "## Where the checkers disagree" in report and "| strict vs lenient |" in report
    assert "graded differently" in report  # the examples, printed in full
    assert (
        "## Where the checkers disagree"
        in (run_dir / "executed" / "02_rejection_filtering.ipynb").read_text()
    )


def test_09_samples_n_times_and_puts_claim_1_at_large_k_beside_08s(smoke) -> None:
    run_dir, _ = smoke
    run = runs.open_run(run_dir, "smoke")
    cfg, subset = run.cfg, large_k.problems(run)
    assert len(subset) == cfg.large_k_problems and set(subset["id"]) <= set(run.problems("test")["id"])
    curves = pd.read_csv(run_dir / large_k.TABLES["curves"])
    assert sorted(curves["k"].unique()) == large_k.k_grid(cfg.large_k_n)
    for name in ("base", *training.VARIANTS):
        graded = run.graded_samples(large_k.samples_file(name), "test", "09_large_k")
        assert len(graded) == len(subset) * cfg.large_k_n and set(graded["problem_id"]) == set(subset["id"])
        assert set(graded["temperature"]) == {cfg.temperature} and set(graded["seed"]) == {cfg.seed}
        at_n = curves.set_index(["variant", "checker", "k"]).loc[(name, "lenient", cfg.large_k_n), "pass@k"]
        evaluated = sampling.read_samples(run_dir / "samples" / f"test_{name}.jsonl").set_index(
            ["problem_id", "sample_idx"]
        )
        first = graded[graded["sample_idx"] < cfg.k].set_index(["problem_id", "sample_idx"])
        assert first["completion"].equals(evaluated.loc[first.index, "completion"])  # 08's own samples
        assert at_n == pytest.approx(graded.groupby("problem_id")["lenient_correct"].any().mean())
    crossover = pd.read_csv(run_dir / large_k.TABLES["crossover"])
    assert sorted(crossover["variant"].unique()) == sorted(training.VARIANTS)
    coverage = pd.read_csv(run_dir / large_k.TABLES["coverage"])
    assert len(coverage) == (1 + len(training.VARIANTS)) * len(set(curves["checker"]))
    claims = pd.read_csv(run_dir / "eval" / "claims.csv")
    assert claims["claim"].iloc[0].startswith(large_k.LABEL) and claims["claim"].iloc[1].startswith("1. ")
    report = (run_dir / "REPORT.md").read_text()
    assert claims["claim"].iloc[0] in report and "### Claim 1 at large k" in report
    assert evaluation.LARGE_K_PENDING not in report
    for checker in ("strict", "lenient"):
        assert (run_dir / large_k.FIGURE.format(checker=checker)).stat().st_size > 0
        assert large_k.FIGURE.format(checker=checker) in report


def test_the_local_judge_graded_every_sample_in_08(smoke, local_judge) -> None:
    if isinstance(local_judge, str):
        pytest.skip(local_judge)
    run_dir, _ = smoke
    assert (
        "LLM judge: smollm2-135m at 127.0.0.1" in (run_dir / "executed" / "08_evaluation.ipynb").read_text()
    )
    for variant in ("base", *training.VARIANTS):
        samples = files.read_jsonl(run_dir / "eval" / f"samples_{variant}.jsonl")
        cache = files.read_jsonl(run_dir / "eval" / f"judge_{variant}.jsonl")
        assert all(isinstance(row["judge_correct"], bool) for row in samples) and len(cache) == len(samples)
    assert "| lenient vs judge |" in (run_dir / "REPORT.md").read_text()


def test_a_rerun_skips_finished_steps(smoke) -> None:
    run_dir, _ = smoke
    again = run_pipeline(run_dir, "smoke")
    assert again.returncode == 0 and re.search(r"^01_sampling +skipped: done earlier", again.stdout, re.M)
    refused = run_pipeline(run_dir, "smoke", "-p", "k=2")
    assert refused.returncode == 1 and "k: 4 -> 2" in refused.stderr and "--force" in refused.stderr


def test_smoke_gsm8k_stops_at_filtering_with_the_counts(beside) -> None:
    """`tests/conftest.py`'s `beside` runs it: 4 problems, 64 tokens, to 02."""
    run_dir, done = beside.root / "gsm8k", beside.result("smoke-gsm8k")
    samples = sampling.read_samples(run_dir / "samples" / "base_train.jsonl")
    assert len(samples) == 4 * 4
    if done.returncode == 0:  # the weak model found a correct sample: then the files must be consistent
        assert files.read_jsonl(run_dir / "datasets" / "sft_round1.jsonl")
        return
    assert (
        "02_rejection_filtering failed: NothingToTrainOn: Nothing to train on: 0 of 16 samples" in done.stderr
    )
    assert "executed/02_rejection_filtering.ipynb" in done.stderr
    assert "Its log (all the notebook and its kernel wrote): " in done.stderr
    assert "logs/02_rejection_filtering.log" in done.stderr
    assert not (run_dir / "datasets" / "sft_round1.jsonl").exists()
