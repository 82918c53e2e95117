"""Kill the series at chosen moments and check what a kill may leave behind.

A `Kill` names a step and a moment in it (a time after the step starts, the engine beginning a sample file, the
judge part-way through a variant, a checkpoint appearing, a file being written). `run_until` starts the pipeline up to
that step and SIGKILLs its whole process tree (pipeline, kernel, engine processes) at that moment; `check_run` then
reads everything a reader would read. `compare` sets a finished run beside one that was never killed, and
`check_verdicts` reads the judge's caches against the graded samples.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import processes
import smoke_series
import torch
from safetensors.torch import load_file

from helpers import files, judge, run_lock, training

POLL_S = 0.02
ADAPTER = ("manifest.json", "adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class Watch:
    """What a moment looks at: the run directory, the seconds since the step began, and the pipeline's pid."""

    run_dir: Path
    elapsed: float
    pid: int


Moment = Callable[[Watch], bool]


@dataclass(frozen=True)
class Kill:
    """SIGKILL during `step` when `moment` first holds: its whole process tree (a machine that dies), or with
    `tree=False` the pipeline alone (`kill -9 <pid>`), whose kernel and engine processes must then end by
    themselves. `skip`: why this run cannot have the moment (no judge server here), said in the table."""

    step: str
    what: str
    moment: Moment
    tree: bool = True
    skip: str | None = None


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


def after(seconds: float) -> Moment:
    return lambda now: now.elapsed >= seconds


def rows(path: Path) -> int:
    """Whole rows in a JSONL file (0 when there is none)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def rows_in(relative: str, n: int) -> Moment:
    """Once the sample file holds `n` whole rows (0: once it exists)."""
    return lambda now: (now.run_dir / relative).exists() and rows(now.run_dir / relative) >= n


def sampling(relatives: Sequence[str], drawn: int = 0) -> Moment:
    """Once the engine has begun one of the sample files `relatives` (the first it opens) and none of its draw is
    back yet: a process of the pipeline holds the file open for writing, and the file still holds only the `drawn`
    rows it began with (none, or 09's copy of 08's). The whole draw is in flight then, however fast the engine
    and however many rows it returns at once; and a rerun draws the very same batch, which is what keeps its
    samples equal to a run never killed in bf16 too (`helpers/sampling.py`: there a sample's text depends a
    little on the requests beside it)."""

    def moment(now: Watch) -> bool:
        begun = [now.run_dir / r for r in relatives if (now.run_dir / r).exists()]
        begun = {path.resolve() for path in begun if rows(path) == drawn}
        return bool(begun) and writes_to(now.pid, begun)

    return moment


def judging(relatives: Sequence[str], total: int) -> Moment:
    """While the judge answers for one of the verdict caches `relatives`: some of its `total` verdicts are in, not
    all (they come a few at a time; a variant whose verdicts all came between two looks passes to the next)."""
    return lambda now: any(0 < rows(now.run_dir / r) < total for r in relatives)


def writes_to(pid: int, paths: set[Path]) -> bool:
    """Whether pipeline `pid` or a process below it has one of `paths` open for writing (a reader's brief look,
    as a resumed sampler reads its file before it draws, is not the engine at work)."""
    for process in {pid} | processes.descendants(pid):
        with contextlib.suppress(OSError):  # gone while we looked
            for fd in os.scandir(f"/proc/{process}/fd"):
                with contextlib.suppress(OSError):
                    if Path(os.readlink(fd.path)) in paths and _writable(process, fd.name):
                        return True
    return False


def _writable(pid: int, fd: str) -> bool:
    flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
    return int(flags, 8) & os.O_ACCMODE != os.O_RDONLY


def checkpoint(variant: str, saved: bool) -> Moment:
    """Once a checkpoint of `variant` is being written (`saved=False`) or is whole (between two checkpoints)."""

    def moment(now: Watch) -> bool:
        found = list((now.run_dir / "checkpoints" / variant).glob("checkpoint-*"))
        return any((c / "trainer_state.json").exists() == saved for c in found)

    return moment


def writing(under: str) -> Moment:
    """While an atomic write under `under` (a folder of the run) is under way: its hidden temporary exists."""
    return lambda now: bool(leftovers(now.run_dir / under))


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
    env: dict[str, str] | None = None,
    cores: set[int] | None = None,
) -> Outcome:
    """Run the pipeline up to `kill.step` (with `env` added to this environment, on `cores` when given); at the
    moment, `act` on it (default: `stop`), then wait."""
    proc = subprocess.Popen(
        smoke_series.pipeline_command(run_dir, smoke_series.PROFILE, "--to", kill.step, *overrides),
        cwd=smoke_series.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        preexec_fn=smoke_series.pinned(cores) if cores else None,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    fired, into = False, math.nan
    started: float | None = None  # when the step began, by the lock's holder record
    while proc.poll() is None and not fired:
        if started is None and began(run_dir, kill.step, proc.pid):
            started = time.monotonic()
        if started is not None and kill.moment(Watch(run_dir, time.monotonic() - started, proc.pid)):
            fired, into = True, time.monotonic() - started
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


def finish(
    run_dir: Path,
    overrides: list[str],
    stop: str,
    env: dict[str, str] | None = None,
    cores: set[int] | None = None,
) -> str:
    """Run the pipeline to the end of step `stop` (on `cores` when given); it must succeed."""
    done = smoke_series.run_pipeline(
        run_dir, smoke_series.PROFILE, "--to", stop, *overrides, env=env, cores=cores
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_run(run_dir: Path, seen: dict[str, bytes], n_rows: dict[str, int]) -> None:
    """What a kill may leave: no file a reader would take for whole is broken or mixed.

    `seen`: each append-only file's whole rows at the last look; they must still be there, unchanged, in order.
    `n_rows`: rows each sample file or verdict cache has when done; fewer (never more, never a duplicate) before.
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
    found = [json.loads(line) for line in whole.decode().splitlines()]
    if relative in n_rows:
        keys = [(r["problem_id"], r["sample_idx"]) for r in found]
        assert len(keys) == len(set(keys)), f"{relative}: duplicate (problem, sample) rows"
        assert len(keys) <= n_rows[relative], f"{relative}: {len(keys)} rows, more than {n_rows[relative]}"


def check_verdicts(run_dir: Path, variants: Sequence[str]) -> None:
    """Each variant's verdict cache holds one verdict per graded sample, for that sample's very text, and the
    graded file carries that verdict."""
    for variant in variants:
        graded = files.read_jsonl(run_dir / "eval" / f"samples_{variant}.jsonl")
        cache = files.read_jsonl(run_dir / "eval" / f"judge_{variant}.jsonl")
        assert len(cache) == len(graded), f"{variant}: {len(cache)} verdicts for {len(graded)} samples"
        verdicts = {tuple(r[k] for k in judge.CACHE_KEYS): r["judge_correct"] for r in cache}
        for row in graded:
            key = judge._key(row["problem_id"], row["sample_idx"], row["completion"], cache[0]["model"])
            assert key in verdicts, f"{variant}: no verdict for {key[:2]} as sampled"
            assert row["judge_correct"] == verdicts[key], f"{variant} {key[:2]}: graded file and cache differ"


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
            verdicts[str(relative)] = _differ(_samples(path), _samples(other), "samples")
        elif top == "eval" and path.name.startswith("judge_"):
            verdicts[str(relative)] = _differ(_judged(path), _judged(other), "verdicts")
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
        elif path.name == training.GROUPS:  # a GRPO arm's groups: the plateau rule's record survives a resume
            same = path.read_bytes() == other.read_bytes() if other.is_file() else False
            verdicts[str(relative)] = "equal" if same else "groups differ"
    return verdicts


def compare_cut(killed: Path, clean: Path, relative: str, before: set[tuple[str, int]]) -> tuple[int, int]:
    """A sample file that a kill cut mid-draw, beside the clean run's: (samples that differ among the `before`
    ones, on disk when the kill's processes were gone; samples that differ among those drawn after). The first were
    drawn in the clean run's very batch; the others in a smaller one, which changes a sample's text in 16 bit."""
    a, b = _samples(clean / relative), _samples(killed / relative)
    differ = {key for key in a if a[key] != b.get(key)}
    return len(differ & before), len(differ - before)


def _differ(a: dict, b: dict, what: str) -> str:
    differ = sum(a[key] != b.get(key) for key in a)
    return "equal" if differ == 0 and len(a) == len(b) else f"{differ} of {len(a)} {what} differ"


def _samples(path: Path) -> dict[tuple[str, int], str]:
    return {(r["problem_id"], r["sample_idx"]): r["completion"] for r in files.read_jsonl(path)}


def _judged(path: Path) -> dict[tuple[str, int], bool]:
    return {(r["problem_id"], r["sample_idx"]): r["judge_correct"] for r in files.read_jsonl(path)}


def _walk(root: Path, hidden: bool = False) -> list[Path]:
    """Files under `root`, without the hidden temporaries of writes in progress unless `hidden`."""
    found = []
    for path in root.rglob("*"):
        if not hidden and any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file() or (hidden and path.name.startswith(".")):
            found.append(path)
    return found
