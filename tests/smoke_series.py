"""The smoke series that the end-to-end tests read and the fault plan kills: its command, the environment it runs
in (the local judge server when one can run here, and fake secrets), and that server's start and stop.

The fixtures built on it (`local_judge`, `judge_env`, `smoke`) are in `tests/conftest.py`, once per test session,
so `tests/e2e` and `tests/faults` share one server and one never-killed run.
"""

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

from helpers import judge

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "smoke"
SERIES_S = 1800  # a whole series, far above its ~12 minutes on 2 cores
START_S = 300  # the judge server, far above the ~40 s it takes, for a loaded CI machine
JUDGE_CONCURRENCY = "8"
# Secrets a user has in the environment (the judge's key reaches the local server, which ignores it): none may
# land in anything the run writes or prints.
FAKE_SECRETS = {
    "HF_TOKEN": "hf_fAkEsEcReT0000000000000000000000",
    judge.ENV_KEY: "sk-judge-fAkEsEcReT-111111111111",
    "TEACHER_API_KEY": "sk-teacher-fAkEsEcReT-22222222",
}


def pipeline_command(run_dir: Path, profile: str, *extra: str) -> list[str]:
    """`python -m helpers.pipeline run` on `profile` in `run_dir`, with `extra` arguments (`--to`, `-p`)."""
    args = ["-m", "helpers.pipeline", "run", "--profile", profile, "--run-dir", str(run_dir)]
    return [sys.executable, *args, *extra]


def run_pipeline(
    run_dir: Path, profile: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        pipeline_command(run_dir, profile, *extra),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SERIES_S,
        env={**os.environ, **(env or {})},
    )


def series_env(local_judge: SimpleNamespace | str) -> dict[str, str]:
    """What the smoke series runs with, on top of this environment: the local judge when one runs (08 asks it,
    8 requests at a time), and the fake secrets."""
    judging = (
        {} if isinstance(local_judge, str) else {**local_judge.env, judge.ENV_CONCURRENCY: JUDGE_CONCURRENCY}
    )
    return {**judging, **FAKE_SECRETS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_judge(logs: Path) -> Iterator[SimpleNamespace | str]:
    """`python -m helpers.judge_server` with the CPU model, started the way the README says (about 40 s on 2
    cores): yields its environment (`SimpleNamespace(env=...)`), or the reason none runs on this machine; stops it
    with SIGTERM after, which must take its engine processes with it."""
    from helpers import cpu_engine, models

    reason = cpu_engine.unavailable()
    if reason is not None:
        yield f"no local judge server: {reason}"
        return
    models.materialize_smollm2()
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
