"""Kill the series at chosen moments and check what a kill may leave behind.

A `Kill` names a step and a moment in it (a time after the step starts, a sample file reaching some rows, a
checkpoint appearing, a file being written). `run_until` starts the pipeline up to that step and SIGKILLs its
whole process tree (pipeline, kernel, engine processes) at that moment; `check_run` then reads everything a reader
would read. `compare` sets a finished run beside one that was never killed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import processes
import torch
from safetensors.torch import load_file

from helpers import files, run_lock

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.02
ADAPTER = ("manifest.json", "adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Kill:
    """SIGKILL during `step` when `moment(run_dir, seconds since the step started)` first holds: its whole process
    tree (a machine that dies), or with `tree=False` the pipeline alone (`kill -9 <pid>`), whose kernel and
    engine processes must then end by themselves."""

    step: str
    what: str
    moment: Callable[[Path, float], bool]
    tree: bool = True


ORPHANS_S = 30  # how long the processes of a pipeline killed alone may take to end by themselves


def stop(proc: subprocess.Popen, tree: bool) -> None:
    """SIGKILL the pipeline (and all below it, or check that all below it end by themselves)."""
    if tree:
        processes.kill_tree(proc.pid)
        return
    below = processes.descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + ORPHANS_S
    while any(map(processes.alive, below)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in below if processes.alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} of the killed pipeline were still running after {ORPHANS_S} s"


def after(seconds: float) -> Callable[[Path, float], bool]:
    return lambda run_dir, elapsed: elapsed >= seconds


def rows_in(relative: str, n: int) -> Callable[[Path, float], bool]:
    """Once the sample file holds `n` whole rows (the engine is mid-way)."""

    def moment(run_dir: Path, elapsed: float) -> bool:
        path = run_dir / relative
        return path.exists() and path.read_bytes().count(b"\n") >= n

    return moment


def checkpoint(variant: str, saved: bool) -> Callable[[Path, float], bool]:
    """Once a checkpoint of `variant` is being written (`saved=False`) or is whole (between two checkpoints)."""

    def moment(run_dir: Path, elapsed: float) -> bool:
        found = list((run_dir / "checkpoints" / variant).glob("checkpoint-*"))
        return any((c / "trainer_state.json").exists() == saved for c in found)

    return moment


def writing(run_dir: Path, elapsed: float) -> bool:
    """While an atomic write is under way: its hidden temporary file or directory exists."""
    return bool(leftovers(run_dir))


@dataclass
class Outcome:
    fired: bool  # the moment came (else the pipeline ended first)
    into: float  # seconds into the step when it came
    returncode: int
    output: str


def run_until(
    run_dir: Path,
    kill: Kill,
    overrides: list[str],
    act: Callable[[subprocess.Popen], None] | None = None,
) -> Outcome:
    """Run the pipeline up to `kill.step`; at the moment, `act` on it (default: `stop`), then wait."""
    proc = subprocess.Popen(
        pipeline_command(run_dir, kill.step, overrides),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    fired, into = False, math.nan
    started: float | None = None  # when the step began, by the lock's holder record
    while proc.poll() is None and not fired:
        if started is None and began(run_dir, kill.step, proc.pid):
            started = time.monotonic()
        elapsed = None if started is None else time.monotonic() - started
        if elapsed is not None and kill.moment(run_dir, elapsed):
            fired, into = True, elapsed
            if act is None:
                stop(proc, kill.tree)
            else:
                act(proc)
        time.sleep(POLL_S)
    proc.wait()
    reader.join()
    return Outcome(fired, into, proc.returncode, "".join(output))


def began(run_dir: Path, step: str, pid: int) -> bool:
    """Whether pipeline `pid` has begun `step`: the run's lock names its holder and step as the step starts
    (the pipeline prints a step's line only once it ends)."""
    holder = run_lock.read_holder(run_dir) or {}
    return holder.get("pid") == pid and str(holder.get("step")).startswith(f"{step}_")


def pipeline_command(run_dir: Path, stop: str, overrides: list[str]) -> list[str]:
    """`python -m helpers.pipeline run` on the smoke profile with `overrides`, up to step `stop`."""
    args = ["-m", "helpers.pipeline", "run", "--profile", "smoke", "--run-dir", str(run_dir), "--to", stop]
    return [sys.executable, *args, *overrides]


def finish(run_dir: Path, overrides: list[str], stop: str) -> str:
    done = subprocess.run(
        pipeline_command(run_dir, stop, overrides), cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_run(run_dir: Path, seen: dict[str, bytes], n_rows: dict[str, int]) -> None:
    """What a kill may leave: no file a reader would take for whole is broken or mixed.

    `seen`: each sample file's whole rows at the last look; they must still be there, unchanged, in order.
    `n_rows`: rows each sample file has when done; fewer (never more, never a duplicate key) before.
    """
    json.loads((run_dir / "config.json").read_text())
    for path in _walk(run_dir):
        relative = str(path.relative_to(run_dir))
        if relative.startswith("checkpoints/"):
            continue  # the trainer's own; a rerun resuming from them is the test of those
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".ipynb" and not path.name.endswith(".partial.ipynb"):
            json.loads(path.read_text())  # papermill's side file may be cut; the notebook by its name may not
        elif path.suffix == ".jsonl":
            _check_jsonl(path, relative, seen, n_rows)
    for variant in (run_dir / "models").iterdir():
        if not variant.name.startswith("."):
            missing = [name for name in ADAPTER if not (variant / name).exists()]
            assert not missing, f"{variant} is incomplete: no {missing}"


def _check_jsonl(path: Path, relative: str, seen: dict[str, bytes], n_rows: dict[str, int]) -> None:
    raw = path.read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]  # a row cut mid-write is the writer's to repair, and is not whole
    if relative.startswith("datasets/"):
        assert whole == raw, f"{relative}: a data set is written whole or not at all"
    assert whole.startswith(seen.get(relative, b"")), f"{relative}: rows written before the kill changed"
    seen[relative] = whole
    rows = [json.loads(line) for line in whole.decode().splitlines()]
    if relative in n_rows:
        keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
        assert len(keys) == len(set(keys)), f"{relative}: duplicate (problem, sample) rows"
        assert len(keys) <= n_rows[relative], f"{relative}: {len(keys)} rows, more than {n_rows[relative]}"


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files and directories of interrupted writes still lying in the run."""
    return [
        str(p.relative_to(run_dir))
        for p in _walk(run_dir, hidden=True)
        if p.name.startswith(".") and not p.name.startswith(".writer")
    ]


def compare(killed: Path, clean: Path) -> dict[str, str]:
    """Each artifact of a killed-and-rerun run set beside the same artifact of a run never killed."""
    verdicts = {}
    for path in sorted(_walk(clean)):
        relative = path.relative_to(clean)
        other = killed / relative
        top = relative.parts[0]
        if top == "samples" and path.suffix == ".jsonl":
            a, b = _samples(path), _samples(other)
            differ = sum(a[key] != b.get(key) for key in a)
            verdicts[str(relative)] = "equal" if differ == 0 else f"{differ} of {len(a)} samples differ"
        elif top == "datasets":
            same = sorted(files.read_jsonl(path), key=json.dumps) == sorted(
                files.read_jsonl(other), key=json.dumps
            )
            verdicts[str(relative)] = "equal" if same else "rows differ"
        elif path.name == "adapter_model.safetensors":
            a, b = load_file(path), load_file(other)
            diff = max((a[k] - b[k]).abs().max().item() for k in a)
            verdicts[str(relative)] = "equal" if diff == 0 else f"max |diff| {diff:.1e}"
            assert torch.isfinite(torch.tensor(diff))
    return verdicts


def _samples(path: Path) -> dict[tuple[str, int], str]:
    return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in files.read_jsonl(path)}


def _walk(root: Path, hidden: bool = False) -> list[Path]:
    """Files under `root`, without the hidden temporaries of writes in progress unless `hidden`."""
    found = []
    for path in root.rglob("*"):
        if not hidden and any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file() or (hidden and path.name.startswith(".")):
            found.append(path)
    return found
