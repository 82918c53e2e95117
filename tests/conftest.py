"""Shared fixtures: five GSM8K rows and a few fake completions (no downloads), and, once per session, the local
judge server and the never-killed smoke series that `tests/e2e` reads and `tests/faults` compares with
(`smoke_series` holds how both run).

Run everything with `make test`; the fast part alone with `.venv/bin/python -m pytest tests/unit tests/property`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import smoke_series

FIXTURES = Path(__file__).parent / "fixtures"

GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
        "May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "A shop sells 1,200 pens a day. How many in 3 days?",
        "answer": "1200*3=<<1200*3=3600>>3600\n#### 3,600",
    },
    {"question": "It is -5 degrees and drops 3. What now?", "answer": "-5-3=<<-5-3=-8>>-8\n#### -8"},
    {"question": "Tom has 7 apples and gets 5 more. How many?", "answer": "7+5=<<7+5=12>>12\n#### 12"},
]


@pytest.fixture
def gsm8k_dir(tmp_path: Path) -> Path:
    """A directory in GSM8K's own layout holding the five rows as both splits."""
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return tmp_path


@pytest.fixture(scope="session")
def smollm2() -> tuple:
    """The CPU model, loaded once per test session (materialized from its GGUF on first use)."""
    from helpers import models

    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def smollm2_completions() -> list[dict]:
    """960 real SmolLM2-135M completions on GSM8K train problems, with their gold numbers."""
    with open(FIXTURES / "smollm2_completions.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(autouse=True)
def _release_run_locks() -> Iterator[None]:
    """Each test gives back the run locks it took: a test process would otherwise hold hundreds (one per run
    directory `runs.open_run` opened), with their descriptors and environment entries."""
    from helpers import run_lock

    before = run_lock.held()
    yield
    for root in run_lock.held() - before:
        run_lock.release(root)


@pytest.fixture(scope="session")
def local_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace | str]:
    """A running judge server (`.env` points the judge at it), or the reason none runs on this machine (the tests
    that need it skip with it; the series then runs without the judge)."""
    yield from smoke_series.serve_judge(tmp_path_factory.mktemp("judge"))


@pytest.fixture
def judge_env(local_judge, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment that points the judge at the local server, set for this test; skips without a server."""
    from helpers import judge

    if isinstance(local_judge, str):
        pytest.skip(local_judge)
    monkeypatch.delenv(judge.ENV_KEY, raising=False)  # a local server takes none
    for key, value in local_judge.env.items():
        monkeypatch.setenv(key, value)
    return local_judge.env


@pytest.fixture(scope="session")
def beside(tmp_path_factory: pytest.TempPathFactory, local_judge) -> smoke_series.Beside:
    """In the background, on its half of the cores (`smoke_series.HALVES`), one after another: the whole series on
    the smoke profile, never killed (08 asks the local judge server when one can run here), then the GSM8K smoke
    to its filtering stop and the GPU first run's CPU path. The fault plan runs its killed series beside them, on
    the other half."""
    from smoke_series import Job, pipeline_command

    root = tmp_path_factory.mktemp("beside")
    # 4 problems, 64 tokens: the test is about the stop and its counts, not the samples (200 tokens cost about 25 s)
    gsm8k = ["--to", "02", "-p", "n_train=4", "-p", "max_new_tokens=64"]
    gpu_smoke = [
        sys.executable,
        "scripts/gpu_smoke.py",
        "--cpu",
        "--problems",
        "2",
        "--out",
        str(root / "gpu"),
    ]
    jobs = {
        "smoke": Job(pipeline_command(root / "smoke", "smoke"), smoke_series.series_env(local_judge)),
        "smoke-gsm8k": Job(pipeline_command(root / "gsm8k", "smoke-gsm8k", *gsm8k)),
        "gpu-smoke-cpu": Job(gpu_smoke, timeout=900),
    }
    return smoke_series.Beside(root, jobs, smoke_series.HALVES[0])


@pytest.fixture(scope="session")
def smoke(beside) -> tuple[Path, subprocess.CompletedProcess]:
    """The never-killed series, once it has ended: what `tests/e2e` checks and `tests/faults` sets its killed run
    beside."""
    return smoke_series.never_killed(beside)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault plan goes before the first test that waits for a run `beside` makes, so the two series run side
    by side."""
    kills = [item for item in items if item.nodeid.startswith("tests/faults/test_kills.py")]
    rest = [item for item in items if item not in kills]
    first = next((n for n, item in enumerate(rest) if "beside" in item.fixturenames), len(rest))
    items[:] = rest[:first] + kills + rest[first:]
