"""The LLM judge against a real OpenAI-compatible server on localhost: vLLM's own server (the CPU build) with the
CPU model, started by the tests (`tests/conftest.py`). The verdicts of a 135M judge are poor; the protocol is
what is tested: the endpoint check, the pool, the cache and the resume. `pytest tests/e2e/test_local_judge.py`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import judge
from helpers.files import read_jsonl

pytestmark = pytest.mark.slow
LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "labelled_completions.jsonl"
N_ROWS = 32


@pytest.fixture(scope="module")
def labelled() -> tuple[pd.DataFrame, dict[str, str]]:
    """The first hand-labelled completions, shaped as graded samples."""
    rows = pd.DataFrame(read_jsonl(LABELS)[:N_ROWS])
    rows["sample_idx"] = range(len(rows))
    return rows, dict(zip(rows["problem_id"], rows["question"], strict=False))


def test_the_judge_answers_every_sample_through_a_pool_and_caches_it(
    judge_env, labelled, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows, questions = labelled
    monkeypatch.setenv(judge.ENV_CONCURRENCY, "4")
    cache = tmp_path / "judge.jsonl"
    started = time.monotonic()
    verdicts = judge.judge_samples(rows, questions, cache)
    elapsed = time.monotonic() - started
    assert verdicts.dtype == bool and len(verdicts) == N_ROWS
    cached = read_jsonl(cache)
    assert len(cached) == N_ROWS and all(row["model"] == judge_env[judge.ENV_MODEL] for row in cached)
    assert all(row["reply"].strip() for row in cached)  # the server really answered each one
    agree = (verdicts.to_numpy() == rows["correct"].to_numpy()).mean()
    print(f"\n{N_ROWS} verdicts in {elapsed:.1f} s, 4 at a time; agreement with the hand labels {agree:.2f}")

    # Resume: the cache answers everything, so a judge that can no longer be reached is never asked.
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1")
    assert judge.judge_samples(rows, questions, cache).tolist() == verdicts.tolist()

    # A run cut short: the lost verdicts are asked again from the real server, the others come from the cache.
    monkeypatch.setenv(judge.ENV_URL, judge_env[judge.ENV_URL])
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:20]) + lines[20][:15])  # 20 whole verdicts and a line cut mid-write
    kept = {(row["problem_id"], row["sample_idx"]) for row in map(json.loads, lines[:20])}
    again = judge.judge_samples(rows, questions, cache)
    assert len(read_jsonl(cache)) == N_ROWS
    for i, row in rows.iterrows():  # cache lines are in the order verdicts came, not in row order
        if (row["problem_id"], row["sample_idx"]) in kept:
            assert again[i] == verdicts[i]


def test_an_unknown_model_is_named_before_any_question(
    judge_env, monkeypatch, labelled, tmp_path: Path
) -> None:
    rows, questions = labelled
    monkeypatch.setenv(judge.ENV_MODEL, "gpt-judge")
    with pytest.raises(
        judge.JudgeError, match="does not serve JUDGE_MODEL='gpt-judge'; it serves: smollm2-135m"
    ):
        judge.judge_samples(rows, questions, tmp_path / "judge.jsonl")
    assert not (tmp_path / "judge.jsonl").exists()


def test_the_local_judge_needs_no_key(judge_env) -> None:
    assert judge.ENV_KEY not in judge_env and "no key" in judge.status()
    verdict, reply = judge.ask("What is 3 + 4?", "3 + 4 = 7\n#### 7", "7")
    assert verdict in (True, False, None) and reply
