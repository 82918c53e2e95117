"""The papermill pipeline and the run directory, with notebook execution stubbed:
`pytest tests/unit/test_pipeline.py` (the real notebooks run in tests/e2e)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import config, pipeline, runs


@pytest.fixture
def fake_execute(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace papermill with a stub that writes each step's outputs and records the call."""
    calls: list[str] = []

    def execute(step: pipeline.Step, run_dir: Path, profile: str, overrides: dict) -> Path:
        calls.append(step.number)
        for output in step.outputs:
            (run_dir / output).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / output).write_text("x")
        return run_dir / "executed" / f"{step.name}.ipynb"

    monkeypatch.setattr(pipeline, "_execute", execute)
    return calls


def test_select_steps() -> None:
    assert [s.number for s in pipeline.select_steps(only="1,02")] == ["01", "02"]
    assert [s.number for s in pipeline.select_steps(start="03", stop="5")] == ["03", "04", "05"]
    assert [s.name for s in pipeline.select_steps(start="07")] == [
        "07_distillation",
        "08_evaluation",
        "09_large_k",
    ]
    assert len(pipeline.select_steps()) == 9
    with pytest.raises(ValueError, match="Unknown step '10'"):
        pipeline.select_steps(only="10")


def test_a_run_directory_of_the_seven_step_series_is_refused_with_the_way_out(tmp_path: Path) -> None:
    """A run made before the distillation step: its config lacks the teacher settings and 07 was evaluation."""
    old = {k: v for k, v in config.to_dict(config.PROFILES["smoke"]).items() if not k.startswith("teacher")}
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({**old, "config_hash": "0123456789ab"}))
    (run_dir / "timings.json").write_text(json.dumps({"07_evaluation": {"wall_s": 1.0, "config_hash": "x"}}))
    with pytest.raises(
        runs.ConfigMismatch, match=r"earlier version of the series: it lacks the settings \['teacher', "
    ):
        pipeline.run("smoke", run_dir, pipeline.select_steps(only="08"))
    assert json.loads((run_dir / "config.json").read_text())["config_hash"] == "0123456789ab"  # untouched
    pipeline.run("smoke", run_dir, [], force=True)  # --force: a new run, the old one kept beside it
    assert (tmp_path / "old.replaced-0123456789ab" / "timings.json").exists()


def test_parse_overrides_types_values() -> None:
    assert pipeline.parse_overrides(
        ["n_train=32", "temperature=0.5", "model=foo/bar", "easiest_first=True"]
    ) == {
        "n_train": 32,
        "temperature": 0.5,
        "model": "foo/bar",
        "easiest_first": True,
    }
    with pytest.raises(ValueError, match="not key=value"):
        pipeline.parse_overrides(["n_train"])


def test_a_rerun_skips_finished_steps(tmp_path: Path, fake_execute: list[str]) -> None:
    steps = pipeline.select_steps(only="01,02")
    timings = pipeline.run("smoke", tmp_path / "run", steps)
    assert fake_execute == ["01", "02"] and set(timings) == {"01_sampling", "02_rejection_filtering"}
    assert json.loads((tmp_path / "run" / "timings.json").read_text()) == timings
    pipeline.run("smoke", tmp_path / "run", steps)
    assert fake_execute == ["01", "02"]  # nothing ran again
    (tmp_path / "run" / "datasets" / "orpo_round1.jsonl").unlink()  # a step whose output is gone reruns
    pipeline.run("smoke", tmp_path / "run", steps)
    assert fake_execute == ["01", "02", "02"]
    pipeline.run("smoke", tmp_path / "run", steps, force=True)
    assert fake_execute == ["01", "02", "02", "01", "02"]


def test_a_changed_setting_is_refused_and_force_replaces_the_run(
    tmp_path: Path, fake_execute: list[str]
) -> None:
    steps = pipeline.select_steps(only="01")
    pipeline.run("smoke", tmp_path / "run", steps)
    with pytest.raises(ValueError, match="other settings \\(n_train: 16 -> 4\\).*--force"):
        pipeline.run("smoke", tmp_path / "run", steps, {"n_train": 4})
    with pytest.raises(ValueError, match="profile: 'smoke' -> 'smoke-gsm8k'"):
        pipeline.run("smoke-gsm8k", tmp_path / "run", steps)
    pipeline.run("smoke", tmp_path / "run", steps, {"n_train": 4}, force=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["n_train"] == 4
    old = json.loads(next(tmp_path.glob("run.replaced-*")).joinpath("config.json").read_text())
    assert old["n_train"] == 16  # the replaced run is kept beside the new one, not deleted


def test_a_failing_step_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail(step, run_dir, profile, overrides):
        calls.append(step.number)
        raise pipeline.StepFailed(f"Step {step.name} failed: boom")

    monkeypatch.setattr(pipeline, "_execute", fail)
    with pytest.raises(pipeline.StepFailed, match="01_sampling failed"):
        pipeline.run("smoke", tmp_path / "run", pipeline.select_steps(only="01,02"))
    assert calls == ["01"]


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pipeline.main(["run", "--profile", "gpu", "--run-dir", str(tmp_path / "r")]) == 1
    assert "Unknown profile 'gpu'. Choose one of: smoke" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert pipeline.main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
    assert pipeline.main(["list-profiles"]) == 0
    assert "smoke-gsm8k" in capsys.readouterr().out


def test_open_run_picks_up_the_run_config_and_names_missing_steps(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke", {"n_train": 3})
    assert runs.open_run(tmp_path / "run", "smoke").cfg.n_train == 3  # a notebook alone uses the run's config
    assert (tmp_path / "run" / "samples").is_dir() and (tmp_path / "run" / "config.json").exists()
    with pytest.raises(
        FileNotFoundError, match="No samples/base_train.jsonl .* Run 01_sampling first .*--only 01"
    ):
        run.require("samples/base_train.jsonl", "01_sampling")
    assert "generated arithmetic toy set" in run.describe()
    assert len(run.problems("train")) == 3


def test_a_dead_kernel_is_reported_as_a_failed_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill
    from nbclient.exceptions import DeadKernelError

    def die(*args, **kwargs):
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", die)
    with pytest.raises(
        pipeline.StepFailed, match="01_sampling failed: its kernel died .* Rerun the pipeline"
    ):
        pipeline._execute(pipeline.STEPS[0], tmp_path, "smoke", {})


def test_a_change_of_09s_settings_reruns_09_alone(tmp_path: Path, fake_execute: list[str]) -> None:
    run_dir = tmp_path / "run"
    pipeline.run("smoke", run_dir)
    assert fake_execute == [s.number for s in pipeline.STEPS]
    assert json.loads((run_dir / "timings.json").read_text())["09_large_k"][
        "settings"
    ] == config.later_settings(config.SMOKE)
    fake_execute.clear()
    pipeline.run("smoke", run_dir, overrides={"large_k_n": 32})
    assert fake_execute == ["09"]
    fake_execute.clear()
    pipeline.run("smoke", run_dir)  # the run's settings now say 32: nothing to do
    assert fake_execute == []


def test_09s_settings_change_without_replacing_the_run_and_rerun_09_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = runs.open_run(run_dir, "smoke")
    path = run_dir / "config.json"
    os.utime(path, (1e9, 1e9))
    again = runs.open_run(run_dir, "smoke", {"large_k_n": 32})  # no ConfigMismatch: only 09 reads it
    assert again.cfg.large_k_n == 32 and config.config_hash(again.cfg) == config.config_hash(first.cfg)
    saved = json.loads(path.read_text())
    assert saved["large_k_n"] == 32 and path.stat().st_mtime == 1e9  # the run's start stays its start
    del saved["large_k_n"], saved["large_k_problems"]  # a run made before 09 existed
    path.write_text(json.dumps(saved))
    old = runs.open_run(run_dir, "smoke")
    assert config.later_settings(old.cfg) == config.later_settings(config.SMOKE)
    assert json.loads(path.read_text())["large_k_problems"] == config.SMOKE.large_k_problems
    large_k, evaluation = pipeline.STEPS[-1], pipeline.STEPS[-2]
    for output in (*large_k.outputs, *evaluation.outputs):
        (run_dir / output).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / output).write_text("x")
    digest = config.config_hash(old.cfg)
    timings = {
        evaluation.name: {"wall_s": 1.0, "config_hash": digest},
        large_k.name: {"wall_s": 1.0, "config_hash": digest, "settings": config.later_settings(old.cfg)},
    }
    assert pipeline._is_done(run_dir, large_k, timings, old.cfg)
    more = config.resolve("smoke", old.cfg, large_k_n=64)
    assert not pipeline._is_done(run_dir, large_k, timings, more)  # 09 reruns with the new n
    assert pipeline._is_done(run_dir, evaluation, timings, more)  # 08 does not
