"""One writer per run directory: a second writer is refused by name, a dead one is taken over, readers pass.

.venv/bin/python -m pytest tests/unit/test_run_lock.py
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import pipeline, run_lock, runs

# A writer as `runs.open_run` makes one (it calls `run_lock.acquire`), without importing the data stack
HOLD = """
import sys, time
from pathlib import Path
from helpers import run_lock
run_lock.acquire(Path(sys.argv[1]), "03_sft")
print("holding", flush=True)
time.sleep(120)
"""


def start_writer(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Another process that opens the run for writing and keeps it open."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[subprocess.Popen]:
    runs.open_run(tmp_path / "run", "smoke")  # the run exists ...
    run_lock.release(tmp_path / "run")
    proc = start_writer(tmp_path / "run")  # ... and another process writes it
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder_and_what_to_do(
    tmp_path: Path, writer: subprocess.Popen
) -> None:
    with pytest.raises(run_lock.RunBusy) as err:
        runs.open_run(tmp_path / "run", "smoke")
    message = str(err.value)
    assert f"PID {writer.pid} on host {socket.gethostname()}" in message
    assert "step 03_sft, since 20" in message
    assert "read_only=True" in message and "another run directory" in message


def test_the_pipeline_refuses_a_busy_run_with_one_line_and_writes_nothing(
    tmp_path: Path, writer: subprocess.Popen, capsys: pytest.CaptureFixture
) -> None:
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    assert pipeline.main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "run")]) == 1
    assert f"PID {writer.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


def test_reading_a_run_beside_its_writer_is_allowed(tmp_path: Path, writer: subprocess.Popen) -> None:
    run = runs.open_run(tmp_path / "run", "smoke", read_only=True)
    assert run.cfg.profile == "smoke"
    assert not run_lock.holds(run.root)
    with pytest.raises(FileNotFoundError, match="No run in"):
        runs.open_run(tmp_path / "nothing", "smoke", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_a_killed_writer_is_taken_over_with_a_message(
    tmp_path: Path, writer: subprocess.Popen, caplog: pytest.LogCaptureFixture
) -> None:
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with caplog.at_level(logging.WARNING, logger="helpers.run_lock"):
        run = runs.open_run(tmp_path / "run", "smoke")
    assert f"taking the run over from PID {writer.pid}" in caplog.text
    holder = json.loads((run.root / run_lock.HOLDER_FILE).read_text())
    assert holder["pid"] == os.getpid()
    run_lock.release(run.root)
    assert not (run.root / run_lock.HOLDER_FILE).exists()


def test_processes_the_writer_starts_write_for_it_and_others_do_not(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    try:
        child = start_writer(run.root)  # inherits GSM8K_RUN_WRITERS, as papermill's kernels do
        child.kill()
        child.wait()
        stranger = {k: v for k, v in os.environ.items() if k != run_lock.INHERITED}
        with pytest.raises(subprocess.CalledProcessError) as err:
            subprocess.run(
                [sys.executable, "-c", HOLD, str(run.root)],
                env=stranger,
                capture_output=True,
                text=True,
                check=True,
            )
        assert "RunBusy" in err.value.stderr and f"PID {os.getpid()}" in err.value.stderr
    finally:
        run_lock.release(run.root)
    assert str(run.root) not in json.loads(os.environ[run_lock.INHERITED])


def test_a_run_path_with_a_colon_is_inherited_too(tmp_path: Path) -> None:
    root = tmp_path / "run-12:30"
    root.mkdir()
    run_lock.acquire(root)
    try:
        child = start_writer(root)  # would be refused if the path were split at the colon
        child.kill()
        child.wait()
    finally:
        run_lock.release(root)


def test_the_same_process_opens_its_run_again_and_names_its_step(tmp_path: Path) -> None:
    run = runs.open_run(tmp_path / "run", "smoke")
    try:
        run_lock.acquire(run.root, "03_sft")
        assert runs.open_run(tmp_path / "run", "smoke").root == run.root
        assert run_lock.read_holder(run.root)["step"] == "03_sft"
    finally:
        run_lock.release(run.root)
