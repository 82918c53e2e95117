"""Fault injection: steps 01-07 on a tiny profile, each SIGKILLed (its whole process tree) at seeded moments, rerun,
and checked: no row lost or doubled, no half-written file a reader would take for whole, and the finished run equal
to one never killed wherever the CPU path is deterministic.

    .venv/bin/python -m pytest tests/faults -m slow -s      # -s prints the table of kills
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from fault_harness import (
    Kill,
    after,
    check_run,
    checkpoint,
    compare,
    finish,
    leftovers,
    rows_in,
    run_until,
    writing,
)

pytestmark = pytest.mark.slow

SEED = 15
# The smallest series that still samples, filters, trains with a checkpoint every step and distils.
TINY = {
    "n_train": 8,
    "n_test": 2,
    "k": 2,
    "max_new_tokens": 64,
    "teacher_max_new_tokens": 64,
    "save_steps": 1,
}
OVERRIDES = [arg for key, value in TINY.items() for arg in ("-p", f"{key}={value}")]
LAST = "07"
SAMPLE_FILES = ("samples/base_train.jsonl", "samples/sft1_train.jsonl", "samples/teacher_train.jsonl")


def kill_plan(rng: random.Random) -> list[Kill]:
    """Several moments per step: loading, mid-sampling, between and during checkpoints, writing a directory."""
    rows = TINY["n_train"] * TINY["k"]
    return [
        Kill("01", "while loading", after(rng.uniform(2, 12))),
        Kill("01", "mid-sampling", rows_in("samples/base_train.jsonl", rng.randint(1, rows - 1))),
        Kill("02", "anywhere in the step", after(rng.uniform(1, 10))),
        Kill("03", "between checkpoints", checkpoint("SFT_1", saved=True)),
        Kill("03", "writing the variant", writing),
        Kill("04", "while loading", after(rng.uniform(2, 12))),
        Kill("04", "during a checkpoint", checkpoint("ORPO_1", saved=False)),
        Kill("04", "mid-training, pipeline alone", checkpoint("ORPO_1", saved=True), tree=False),
        Kill(
            "05",
            "mid-sampling, pipeline alone",
            rows_in("samples/sft1_train.jsonl", rng.randint(1, rows - 1)),
            tree=False,
        ),
        Kill("05", "during a checkpoint", checkpoint("SFT_1_SFT_2", saved=False)),
        Kill("05", "writing a variant", writing),
        Kill("06", "mid-training", checkpoint("GRPO", saved=True)),
        Kill("06", "while loading", after(rng.uniform(2, 12))),
        Kill(
            "07", "mid-sampling (teacher)", rows_in("samples/teacher_train.jsonl", rng.randint(1, rows - 1))
        ),
        Kill("07", "between checkpoints", checkpoint("SFT_gold", saved=True)),
        Kill("07", "writing a variant", writing),
    ]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny series, never killed."""
    run_dir = tmp_path_factory.mktemp("faults") / "clean"
    finish(run_dir, OVERRIDES, LAST)
    return run_dir


def test_kills_lose_nothing_and_the_rerun_ends_where_an_unkilled_run_does(
    clean: Path, tmp_path: Path, record_property
) -> None:
    run_dir = tmp_path / "killed"
    n_rows = {name: TINY["n_train"] * TINY["k"] for name in SAMPLE_FILES}
    seen: dict[str, bytes] = {}
    table = []
    for kill in kill_plan(random.Random(SEED)):
        outcome = run_until(run_dir, kill, OVERRIDES)
        if outcome.fired:
            check_run(run_dir, seen, n_rows)
        else:
            assert outcome.returncode == 0, outcome.output[-3000:]
        table.append((kill.step, kill.what, "killed" if outcome.fired else "step ended first", outcome.into))
    finish(run_dir, OVERRIDES, LAST)
    check_run(run_dir, seen, n_rows)
    for name, n in n_rows.items():
        assert len(seen[name].splitlines()) == n, f"{name}: {len(seen[name].splitlines())} rows, not {n}"
    verdicts = compare(run_dir, clean)
    print("\nstep  moment                          outcome            s into step")
    for step, what, outcome, into in table:
        print(f"{step}    {what:<31} {outcome:<18} {into:6.1f}")
    for name, verdict in verdicts.items():
        print(f"{name}: {verdict}")
    record_property("kills", table)
    assert leftovers(run_dir) == [], "temporaries of killed writes are left in the run"
    killed = sum(outcome == "killed" for _, _, outcome, _ in table)
    assert killed >= len(table) - 3, f"only {killed} of {len(table)} planned kills happened"
    for name in (*SAMPLE_FILES, *(str(p.relative_to(clean)) for p in (clean / "datasets").glob("*.jsonl"))):
        assert verdicts[name] == "equal", f"{name}: {verdicts[name]}"
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
