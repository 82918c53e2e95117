"""The papermill pipeline and the run directory, with notebook execution stubbed:
`pytest tests/unit/test_pipeline.py` (the real notebooks run in tests/e2e)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager

from helpers import config, console, pipeline, runs


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


def test_each_step_prints_one_line_with_its_time_and_what_it_wrote(
    tmp_path: Path, fake_execute: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="helpers.pipeline"):
        pipeline.run("smoke", run_dir, pipeline.select_steps(only="02,03"))
    lines = [r.getMessage() for r in caplog.records if r.name == "helpers.pipeline"]
    assert [line.split()[0] for line in lines] == ["02_rejection_filtering", "03_sft"]  # one line a step
    # the model's folder, not its manifest
    assert re.fullmatch(r"03_sft {18}\s+\d+ s  models/SFT_1", lines[1])
    assert lines[0].endswith("  datasets/sft_round1.jsonl, datasets/orpo_round1.jsonl")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="helpers.pipeline"):
        pipeline.run("smoke", run_dir, pipeline.select_steps(only="02"))
    [skipped] = [r.getMessage() for r in caplog.records if r.name == "helpers.pipeline"]
    assert re.fullmatch(r"02_rejection_filtering  skipped: done earlier for config \w{12}", skipped)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.04, "0 s"),
        (6.1, "6 s"),
        (99.4, "99 s"),  # under 100 s: seconds alone
        (212, "3 min 32 s"),
        (3599.6, "1 h 00 min"),  # rounded before it is split
        (7530, "2 h 05 min"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float, shown: str) -> None:
    assert console.duration(seconds) == shown


def test_the_line_names_outputs_then_the_figures_the_step_drew(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    old = tmp_path / "figures" / "01_completion_lengths.png"
    old.write_text("x")
    os.utime(old, (1e9, 1e9))  # drawn by an earlier step
    since = time.time() - 1
    (tmp_path / "figures" / "train_SFT_1.png").write_text("x")
    outputs = ("models/SFT_1/manifest.json",)
    assert console.written(tmp_path, outputs, since) == ["models/SFT_1", "figures/train_SFT_1.png"]
    for name in ("a.png", "b.png"):
        (tmp_path / "figures" / name).write_text("x")
    assert console.written(tmp_path, outputs, since) == ["models/SFT_1", "3 figures"]
    assert console.written(tmp_path / "none", ("eval/results.csv",), since) == ["eval/results.csv"]


def test_papermill_info_goes_to_the_log_and_its_warnings_to_both(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import papermill.log

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    path = tmp_path / "logs" / "03_sft.log"
    path.parent.mkdir()
    path.write_text("an earlier attempt's log\n")
    try:
        with console.routed(path) as kernel:
            papermill.log.logger.info("Input Notebook:  03_sft.ipynb")
            papermill.log.logger.warning("Passed unknown parameter: foo")
            assert issubclass(kernel["kernel_manager_class"], AsyncKernelManager)
        papermill.log.logger.info("after the step: the terminal again")
    finally:
        logging.basicConfig(force=True)  # no handler left on a stream pytest closes
    out = capsys.readouterr().out
    assert "Input Notebook" not in out and "Passed unknown parameter: foo" in out
    assert "after the step" in out  # the logger is as it was
    text = path.read_text()
    assert "earlier attempt" not in text and "Input Notebook" in text and "WARNING: Passed unknown" in text


def test_the_kernel_is_launched_with_its_stdout_and_stderr_on_the_log(tmp_path: Path) -> None:
    import asyncio

    launched = {}

    class Provisioner:
        has_process = True

        async def launch_kernel(self, cmd: list[str], **kw: object) -> dict:
            launched.update(kw)
            return {}

    manager = console.kernel_manager(7)()
    manager.provisioner = Provisioner()
    manager._reconcile_connection_info = lambda info: None  # no kernel: no connection to check
    asyncio.run(manager._async_launch_kernel(["python"], env={"A": "1"}, stdout=None))
    assert launched == {"env": {"A": "1", **console.KERNEL_ENV}, "stdout": 7, "stderr": 7}


def test_a_full_disk_costs_the_log_its_lines_and_nothing_else() -> None:
    log = console.LogFile(Path("/dev/full"))  # every write fails with ENOSPC
    log.write("papermill INFO: Input Notebook\n")
    log.write(b"[W utils.cpp:68] Warning: NUMA binding\n")
    log.close()
    log.write("after the step\n")  # a straggler of the kernel's output, once the log is closed


def test_a_step_sends_its_kernels_noise_to_its_log_and_keeps_papermills_warnings_on_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """A real kernel (a few seconds): what it writes (the TCP warning at start, a C library's warning, a child
    process, the notebook's prints) lands in the step's log, once, and never on the terminal."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cells = [
        "import os, subprocess, sys",
        "os.write(2, b'[W utils.cpp:68] Warning: NUMA binding\\n')\nprint('printed')",
        "subprocess.run([sys.executable, '-c', 'import sys; print(\"child stderr\", file=sys.stderr)'])",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, notebooks / "03_sft.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOKS", notebooks)
    (tmp_path / "run" / "executed").mkdir(parents=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        executed = pipeline._execute(pipeline.STEPS[2], tmp_path / "run", "smoke", {})
    finally:
        logging.basicConfig(force=True)
    out, err = capfd.readouterr()
    # papermill's own warning (no cell tagged parameters) stays visible; its path lines and the kernel do not
    assert "Input notebook does not contain a cell with tag 'parameters'" in out + err
    for noise in ("Input Notebook", "Executing notebook", "IPKernelApp", "NUMA", "child stderr", "printed"):
        assert noise not in out + err
    log = (tmp_path / "run" / "logs" / "03_sft.log").read_text()
    for line in ("Input Notebook", "running over TCP without encryption", "NUMA binding", "child stderr"):
        assert log.count(line) == 1
    assert log.count("printed") == 1  # the notebook's own output too: the log is its whole transcript
    assert "Debugger warning" not in log
    outputs = json.dumps([c.get("outputs") for c in json.loads(executed.read_text())["cells"]])
    assert "printed" in outputs and "NUMA binding" not in outputs  # the notebook keeps Python's output


def test_a_failed_step_names_its_executed_notebook_and_its_kernel_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    def fail(notebook: str, partial: str, **kwargs: object) -> None:
        Path(partial).write_text("{}")
        raise PapermillExecutionError(3, 1, "boom", "ValueError", "boom\nmore", [])

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    (tmp_path / "executed").mkdir()
    with pytest.raises(pipeline.StepFailed) as failed:
        pipeline._execute(pipeline.STEPS[2], tmp_path, "smoke", {})
    assert str(failed.value).splitlines() == [
        "Step 03_sft failed: ValueError: boom",
        f"Open the executed notebook for the full traceback: {tmp_path / 'executed' / '03_sft.ipynb'}",
        f"Its log (all the notebook and its kernel wrote): {tmp_path / 'logs' / '03_sft.log'}",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_counts_cells_shows_the_notebooks_own_count_and_only_on_a_terminal(tmp_path: Path) -> None:
    notebook = tmp_path / "03_sft.ipynb"
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1") for _ in range(4)]), notebook
    )
    screen = Terminal()
    with console.Progress("03_sft", notebook, screen) as progress:
        assert progress.hooks()["progress_bar"] is False  # papermill's own bar is replaced, not doubled
        progress.cell_started(cell=None, cell_index=2)
        progress.write("\rsampling:   2%|▏         | 1/64 [00:22<23:11, 22.08s/it]")
        progress.write("\rsampling: 100%|██████████| 64/64 [00:22<00:00,  2.89it/s, tok_s=238.5]\n")
        progress.write("helpers.sampling: a line that is no bar\n")  # keeps the last count
        progress.bar.refresh()
        shown = screen.getvalue().rsplit("\r", 1)[-1]
        assert shown.startswith("03_sft  ") and shown.endswith("  2/5 cells, sampling 64/64")
        progress.write(" 40%|████      | 12/30 [00:10<00:15,  1.2it/s]")  # a bar with no name: its count
        assert progress.bar.postfix == "12/30"
    assert screen.getvalue().endswith("\r")  # cleared: the step's line takes its place
    piped = io.StringIO()
    with console.Progress("03_sft", notebook, piped) as progress:
        progress.cell_started(cell=None, cell_index=1)
    assert piped.getvalue() == ""  # a log file gets the step's line alone


def test_step_lines_are_as_wide_as_the_longest_step_name() -> None:
    """console cannot import pipeline (pipeline imports it): its width follows the steps through this test."""
    assert max(len(step.name) for step in pipeline.STEPS) == console.NAME_WIDTH
