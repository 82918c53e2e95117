"""The end-to-end tests' shared local judge: `python -m helpers.judge_server` (vLLM's own OpenAI-compatible
server) with the CPU model, started the way the README says, once per test session (about 40 s on 2 cores), idle
between uses, and stopped with SIGTERM at the end, which must take its engine processes with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import processes
import pytest

from helpers import cpu_engine, judge, models

ROOT = Path(__file__).resolve().parents[2]
START_S = 300  # far above the ~40 s it takes, for a loaded CI machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_exports(process: subprocess.Popen, timeout: float) -> dict[str, str] | None:
    """The `export KEY=VALUE ...` line the server prints when it is ready, or None if it exits first (a server
    that takes longer than `timeout` is killed, which ends the output)."""
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith("export "):
                return dict(pair.split("=", 1) for pair in line.split()[1:])
        return None
    finally:
        watchdog.cancel()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, as a job manager would; then none of the processes it started may be left."""
    started = processes.descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(processes.alive, started)):
        time.sleep(0.1)
    left = [pid for pid in started if processes.alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"the judge server's processes {left} outlived SIGTERM"


@pytest.fixture(scope="session")
def local_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace | str]:
    """A running judge server (`.env` points the judge at it), or the reason none runs on this machine (the tests
    that need it skip with it; the series then runs without the judge)."""
    reason = cpu_engine.unavailable()
    if reason is not None:
        yield f"no local judge server: {reason}"
        return
    models.materialize_smollm2()
    logs = tmp_path_factory.mktemp("judge")
    command = [sys.executable, "-m", "helpers.judge_server", "--model", models.SMOLLM2_ALIAS]
    command += ["--port", str(free_port()), "--max-model-len", "2048", "--log", str(logs / "server.log")]
    with open(logs / "cli.log", "w") as err:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, start_new_session=True
        )
    env = _read_exports(process, START_S)
    if env is None:
        _stop(process)
        tail = (logs / "cli.log").read_text(errors="replace")[-1500:]
        yield f"the local judge server did not start:\n{tail}"
        return
    yield SimpleNamespace(env=env)
    _stop(process)


@pytest.fixture
def judge_env(local_judge, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment that points the judge at the local server, set for this test; skips without a server."""
    if isinstance(local_judge, str):
        pytest.skip(local_judge)
    monkeypatch.delenv(judge.ENV_KEY, raising=False)  # a local server takes none
    for key, value in local_judge.env.items():
        monkeypatch.setenv(key, value)
    return local_judge.env
