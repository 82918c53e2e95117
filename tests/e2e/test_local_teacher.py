"""An endpoint teacher against a real OpenAI-compatible server on localhost: the tests' local vLLM server
(`tests/conftest.py`, the CPU model) named by `TEACHER_BASE_URL` / `TEACHER_MODEL`, as a user would point
notebook 07 at a `vllm serve`. `pytest tests/e2e/test_local_teacher.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import distillation, judge, runs, sampling

pytestmark = pytest.mark.slow


def test_an_endpoint_teacher_samples_every_training_problem_k_times_and_resumes(
    judge_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEACHER_BASE_URL", judge_env[judge.ENV_URL])
    monkeypatch.setenv("TEACHER_MODEL", judge_env[judge.ENV_MODEL])
    monkeypatch.setenv("TEACHER_CONCURRENCY", "8")
    secret = "sk-teacher-fAkEsEcReT-33333333"  # sent to the server, which ignores it; never written
    monkeypatch.setenv("TEACHER_API_KEY", secret)
    # 4 problems, 64 tokens: the test is about the route, not the answers
    run = runs.open_run(
        tmp_path / "run", "smoke", {"teacher": "endpoint", "n_train": 4, "teacher_max_new_tokens": 64}
    )
    graded = distillation.sample_teacher(run)
    k, store = run.cfg.k, run.root / distillation.TEACHER_SAMPLES
    assert len(graded) == 4 * k and not graded.duplicated(["problem_id", "sample_idx"]).any()
    assert set(graded["backend"]) == {"endpoint"} and set(graded["model"]) == {judge_env[judge.ENV_MODEL]}
    assert (graded["n_tokens"] > 0).all() and (graded["requests"] >= 1).all()
    assert graded["completion"].str.strip().str.len().gt(0).all()  # the server really answered each one
    assert (graded["n_tokens"] <= run.cfg.teacher_max_new_tokens).all()
    print(f"\nendpoint teacher: {len(graded)} samples, {graded['n_tokens'].sum()} tokens, "
          f"{graded['lenient_correct'].sum()} verified")  # fmt: skip

    # A run cut short: the lost samples are asked again, the others stay as they were.
    lines = store.read_text().splitlines(keepends=True)
    store.write_text("".join(lines[:10]) + lines[10][:20])
    kept = sampling.read_samples(store)
    again = distillation.sample_teacher(run)
    assert len(again) == 4 * k and len(sampling.read_samples(store)) == 4 * k
    merged = again.set_index(["problem_id", "sample_idx"])
    for row in kept.itertuples():
        assert merged.loc[(row.problem_id, row.sample_idx), "completion"] == row.completion.strip()
    assert not [p for p in run.root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
