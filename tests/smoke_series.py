"""The smoke series that the end-to-end tests read and the fault plan kills: its command, the environment it runs
in (the local judge server when one can run here, and fake secrets), and that server's start and stop.

The fixtures built on it (`local_judge`, `judge_env`, `beside`, `smoke`) are in `tests/conftest.py`, once per test session,
so `tests/e2e` and `tests/faults` share one server and one never-killed run. That run and the fault plan's killed
one go side by side, each pinned to its half of this machine's cores (`HALVES`): most of a series is one thread
at a time (kernel starts, imports, small decode batches), so two at once on one core each take far less than two
in turn on both, and the two runs still compute alike (the same number of threads, so the same sums).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


def halves() -> tuple[set[int], set[int]]:
    """Two disjoint, equal sets of the cores this process may use (the odd one out unused); on one core, that
    core twice."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half : 2 * half])


HALVES = halves()


def pinned(cores: set[int]) -> Callable[[], None]:
    """For `Popen(preexec_fn=...)`: the child and all it starts (kernels, vLLM, torch's threads) run on `cores`."""
    return lambda: os.sched_setaffinity(0, cores)


@dataclass(frozen=True)
class Job:
    """A command for `Beside`, with the environment it adds and its time limit."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = SERIES_S


class Beside:
    """Commands run one after another in the background on `cores` (a thread waits on each): the never-killed
    series first, then runs whose tests only read what they print and write, which fill the time that half would
    otherwise wait for the killed run. `root`: the folder they write under. `result(name)` waits for one and gives
    it back as `subprocess.run` does."""

    def __init__(self, root: Path, jobs: dict[str, Job], cores: set[int]) -> None:
        self.root, self.jobs, self.cores = root, jobs, cores
        self.results: dict[str, subprocess.CompletedProcess | BaseException] = {}
        self.done = {name: threading.Event() for name in jobs}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for name, job in self.jobs.items():
            try:
                self.results[name] = run(job.command, job.env, self.cores, job.timeout)
            except BaseException as err:  # a time-out, said by the test that waits for it
                self.results[name] = err
            self.done[name].set()

    def result(self, name: str) -> subprocess.CompletedProcess:
        waited = sum(job.timeout for job in self.jobs.values())
        assert self.done[name].wait(waited), f"{name}: not done after {waited:.0f} s"
        result = self.results[name]
        if isinstance(result, BaseException):
            raise result
        return result


def never_killed(beside: Beside) -> tuple[Path, subprocess.CompletedProcess]:
    """The never-killed series that `beside` runs, once it has ended well: its run directory and its output."""
    done = beside.result("smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    return beside.root / "smoke", done


def run(
    command: list[str],
    env: dict[str, str] | None = None,
    cores: set[int] | None = None,
    timeout: float = SERIES_S,
) -> subprocess.CompletedProcess:
    """`command` from the repository root, with `env` added to this environment, on `cores` when given."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=pinned(cores) if cores else None,
    )


def run_pipeline(
    run_dir: Path, profile: str, *extra: str, env: dict[str, str] | None = None, cores: set[int] | None = None
) -> subprocess.CompletedProcess:
    """The pipeline to its end (or `--to`), on `cores` when given."""
    return run(pipeline_command(run_dir, profile, *extra), env, cores)


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
    cores), on the never-killed run's half of the cores: yields its environment (`SimpleNamespace(env=...)`), or
    the reason none runs on this machine; stops it with SIGTERM after, which must take its engine processes with
    it."""
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
            command,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            start_new_session=True,
            # Beside the never-killed run: the server's threads never wait on a core the other run keeps busy.
            preexec_fn=pinned(HALVES[0]),
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
