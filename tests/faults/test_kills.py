"""Fault injection: the smoke series, steps 01-09, SIGKILLed at seeded moments (its whole process tree, or the
pipeline alone), rerun, and checked: no row lost or doubled, no half-written file a reader would take for whole,
and the finished run equal to the never-killed smoke run that `tests/e2e` reads (`tests/conftest.py`'s `smoke`):
its samples, data sets and adapters. It runs beside that run, on the other half of the cores
(`smoke_series.HALVES`: so both compute alike), as that run does, with the same judge server when one can run here;
the judge's verdicts are checked whole and consistent, and only shown beside the smoke run's (a server batches
requests as they come, so a verdict may differ between two runs).

    .venv/bin/python -m pytest tests/faults -m slow -s      # -s prints the table of kills
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import smoke_series
from fault_harness import (
    Kill,
    after,
    check_run,
    check_verdicts,
    checkpoint,
    compare,
    compare_cut,
    finish,
    judging,
    leftovers,
    run_until,
    sampling,
    writing,
)

from helpers import config, evaluation, files, large_k, training

pytestmark = pytest.mark.slow

SEED = 15
# A checkpoint every optimizer step, for the moments between and during checkpoints: they change nothing a variant
# learns (its adapter must equal the smoke run's, which saves none).
OVERRIDES = ["-p", "save_steps=1"]
LAST = "09"
CORES = smoke_series.HALVES[1]  # the never-killed run has the other half
UNFIRED = 1  # planned kills that may find their step ended first (a checkpoint or a write can be quicker than a look)
CFG = config.PROFILES[smoke_series.PROFILE]
NAMES = [evaluation.BASE, *training.VARIANTS]  # the order 08 and 09 take them in
TRAIN = {
    "01": "samples/base_train.jsonl",
    "05": "samples/sft1_train.jsonl",
    "07": "samples/teacher_train.jsonl",
}
TEST = [evaluation.test_samples_file(name) for name in NAMES]
LARGE_K = [large_k.samples_file(name) for name in NAMES]
VERDICTS = [f"eval/judge_{name}.jsonl" for name in NAMES]
N_TRAIN, N_TEST = CFG.n_train * CFG.k, CFG.n_test * CFG.k
N_LARGE_K = min(CFG.large_k_problems, CFG.n_test) * CFG.large_k_n
FROM_08 = min(CFG.large_k_problems, CFG.n_test) * min(CFG.k, CFG.large_k_n)  # the rows 09 begins a file with
SAMPLE_ROWS = (
    dict.fromkeys(TRAIN.values(), N_TRAIN) | dict.fromkeys(TEST, N_TEST) | dict.fromkeys(LARGE_K, N_LARGE_K)
)


def kill_plan(rng: random.Random, no_judge: str | None) -> list[Kill]:
    """Every kind of moment, and every step at least once (08 twice: its sampling and its judge). 08 and 09 are
    killed in the first variant, from a seeded one on, whose moment comes."""
    sampled, large = rng.randint(1, 3), rng.randint(1, 4)
    judged = rng.randint(sampled, sampled + 2)  # the variant sampled after the kill, or one after it
    return [
        Kill("01", "mid-sampling", sampling([TRAIN["01"]])),
        Kill("02", "while loading", after(rng.uniform(1, 3))),
        Kill("03", "between checkpoints", checkpoint("SFT_1", saved=True)),
        Kill("04", "during a checkpoint", checkpoint("ORPO_1", saved=False)),
        Kill("05", "writing a variant", writing("models")),
        Kill("06", "mid-training", checkpoint("GRPO", saved=True)),
        Kill("07", "mid-sampling (teacher)", sampling([TRAIN["07"]])),
        Kill("08", f"mid-sampling, {NAMES[sampled]} on", sampling(TEST[sampled:])),
        Kill("08", f"mid-judging, {NAMES[judged]} on", judging(VERDICTS[judged:], N_TEST), skip=no_judge),
        # The pipeline alone: its kernel may draw a few more rows before it ends, and the rerun draws the rest in a
        # smaller batch. In 09, whose samples nothing later reads, so in bf16 only this file can differ.
        Kill(
            "09",
            f"mid-sampling, {NAMES[large]} on, pipeline alone",
            sampling(LARGE_K[large:], FROM_08),
            tree=False,
        ),
    ]


def cut_mid_draw(seen: dict[str, bytes], cut: dict[str, set[tuple[str, int]]]) -> None:
    """Note in `cut` each sample file that a kill left part-way through a draw (more rows than it began with, fewer
    than it ends with), with the samples it held then; a file's first such kill is the one that counts."""
    for name, total in SAMPLE_ROWS.items():
        rows = [json.loads(line) for line in seen.get(name, b"").splitlines()]
        if (FROM_08 if name in LARGE_K else 0) < len(rows) < total:
            cut.setdefault(name, {(r["problem_id"], r["sample_idx"]) for r in rows})


def test_kills_lose_nothing_and_the_rerun_ends_where_the_smoke_run_does(
    beside, local_judge, tmp_path: Path, record_property
) -> None:
    run_dir = tmp_path / "killed"
    env = smoke_series.series_env(local_judge)  # the smoke run's: the same judge, when one runs here
    no_judge = local_judge if isinstance(local_judge, str) else None
    n_rows = SAMPLE_ROWS | ({} if no_judge else dict.fromkeys(VERDICTS, N_TEST))
    seen: dict[str, bytes] = {}
    cut: dict[str, set[tuple[str, int]]] = {}
    table = []
    for kill in kill_plan(random.Random(SEED), no_judge):
        if kill.skip:
            table.append((kill.step, kill.what, "skipped", math.nan))
            continue
        outcome = run_until(run_dir, kill, OVERRIDES, env=env, cores=CORES)
        if outcome.fired:
            check_run(run_dir, seen, n_rows)
            cut_mid_draw(seen, cut)
        else:
            assert outcome.returncode == 0, outcome.output[-3000:]
        table.append((kill.step, kill.what, "killed" if outcome.fired else "step ended first", outcome.into))
    finish(run_dir, OVERRIDES, LAST, env, CORES)
    check_run(run_dir, seen, n_rows)
    for name, n in n_rows.items():
        assert len(seen[name].splitlines()) == n, f"{name}: {len(seen[name].splitlines())} rows, not {n}"
    if not no_judge:
        check_verdicts(run_dir, NAMES)
    reference, _ = smoke_series.never_killed(beside)
    verdicts = compare(run_dir, reference)
    report(table, verdicts, no_judge)
    record_property("kills", table)
    assert leftovers(run_dir) == [], "temporaries of killed writes are left in the run"
    planned = sum(outcome != "skipped" for _, _, outcome, _ in table)
    killed = sum(outcome == "killed" for _, _, outcome, _ in table)
    assert killed >= planned - UNFIRED, f"only {killed} of {planned} planned kills happened"
    assert_as_the_smoke_run(run_dir, reference, verdicts, cut)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def report(table: list[tuple], verdicts: dict[str, str], no_judge: str | None) -> None:
    """The kills, then each file beside the smoke run's (shown with -s)."""
    print("\nstep  moment                                     outcome            s into step")
    for step, what, outcome, into in table:
        print(f"{step}    {what:<42} {outcome:<18} {'' if math.isnan(into) else f'{into:6.1f}'}")
    if no_judge:
        print(f"08's judge kill skipped: {no_judge}")
    for name, verdict in verdicts.items():
        print(f"{name}: {verdict}")


def assert_as_the_smoke_run(
    run_dir: Path, reference: Path, verdicts: dict[str, str], cut: dict[str, set[tuple[str, int]]]
) -> None:
    """Every sample file, data set and adapter equals the smoke run's; a sample file cut mid-draw, in the samples
    it held then, and in the rest too unless drawn in 16 bit, where a sample's text depends a little on the batch
    it was drawn in (`helpers/sampling.py`)."""
    datasets = [str(p.relative_to(reference)) for p in (reference / "datasets").glob("*.jsonl")]
    adapters = [f"models/{name}/adapter_model.safetensors" for name in training.VARIANTS]
    groups = [f"models/{arm}/{training.GROUPS}" for arm in evaluation.GRPO_ARMS]
    for name in (*SAMPLE_ROWS.keys() - cut.keys(), *datasets, *adapters, *groups):
        assert verdicts[name] == "equal", f"{name}: {verdicts[name]}"
    for name, before in cut.items():
        at_kill, drawn_after = compare_cut(run_dir, reference, name, before)
        said = (
            f"{name}, cut mid-draw at {len(before)} rows: {at_kill} of them differ, {drawn_after} drawn after"
        )
        print(said)
        assert at_kill == 0, said
        sixteen_bit = {row.get("dtype") for row in files.read_jsonl(run_dir / name)} & {"bfloat16", "float16"}
        assert drawn_after == 0 or sixteen_bit, said
