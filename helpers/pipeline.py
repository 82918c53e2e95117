"""Run the notebook series headlessly with papermill, in order, resuming where a run stopped.

    python -m helpers.pipeline run --profile smoke --run-dir outputs/smoke [--only 01,02] [--from 03]
        [--to 05] [--force] [-p key=value ...]
    python -m helpers.pipeline list-profiles

A step whose outputs exist for the same config hash is skipped, so a rerun after a crash continues from the
failed step. Each step prints one line (name, time, what it wrote); the rest of what it says goes to
`<run>/logs/<step>.log` (`console`). What each notebook computes lives in the other helpers modules; the run
layout in `runs`.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import accelerator, config, console, files, run_lock, runs
from helpers.files import atomic_write_text

log = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TIMINGS = "timings.json"


@dataclass(frozen=True)
class Step:
    number: str
    name: str
    outputs: tuple[str, ...]  # what the step writes; all present (for the same config) means done
    reads: tuple[str, ...] = ()  # the `config.LATER_STEP_SETTINGS` it reads: done only for the same values

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / f"{self.name}.ipynb"


STEPS = (
    Step("01", "01_sampling", ("samples/base_train.jsonl",)),
    Step("02", "02_rejection_filtering", ("datasets/sft_round1.jsonl", "datasets/orpo_round1.jsonl")),
    Step("03", "03_sft", ("models/SFT_1/manifest.json",)),
    Step("04", "04_orpo", ("models/ORPO_1/manifest.json",)),
    Step(
        "05",
        "05_second_round",
        (
            "datasets/sft_round2.jsonl",
            "models/SFT_1_SFT_2/manifest.json",
            "models/SFT_1_ORPO_2/manifest.json",
            "models/SFT_2/manifest.json",
        ),
    ),
    Step("06", "06_grpo", ("models/GRPO/manifest.json", "models/GRPO_filtered/manifest.json")),
    Step(
        "07",
        "07_distillation",
        (
            "datasets/sft_gold.jsonl",
            "datasets/sft_teacher.jsonl",
            "models/SFT_gold/manifest.json",
            "models/SFT_teacher/manifest.json",
        ),
    ),
    Step("08", "08_evaluation", ("eval/results.csv", "REPORT.md")),
    Step(
        "09",
        "09_large_k",
        tuple(f"eval/large_k/{name}.csv" for name in ("curves", "crossover", "coverage", "claim")),
        reads=config.LATER_STEP_SETTINGS,
    ),
)


class StepFailed(RuntimeError):
    """A notebook raised: the message names the step, the error and the executed notebook to open."""


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings to typed values (numbers, booleans, None as Python literals; else strings)."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {pair!r} is not key=value (e.g. -p n_train=32).")
        try:
            overrides[key] = ast.literal_eval(raw)
        # what the ast docs list for malformed input: "{[]: 1}" raises TypeError, "-" * 10**5 + "1" MemoryError
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            overrides[key] = raw
    return overrides


def select_steps(only: str | None = None, start: str | None = None, stop: str | None = None) -> list[Step]:
    """The steps to run, in order, from `--only` or a `--from`/`--to` range."""
    numbers = [s.number for s in STEPS]
    asked = [n.strip().zfill(2) for n in only.split(",")] if only else []
    for n in [*asked, *(x.zfill(2) for x in (start, stop) if x)]:
        if n not in numbers:
            raise ValueError(f"Unknown step {n!r}. Steps: {', '.join(numbers)}.")
    if asked:
        return [s for s in STEPS if s.number in asked]
    lo, hi = (start or numbers[0]).zfill(2), (stop or numbers[-1]).zfill(2)
    return [s for s in STEPS if lo <= s.number <= hi]


def _prepare(run_dir: Path, profile: str, overrides: dict[str, Any], force: bool) -> config.RunConfig:
    """Open the run directory, replacing a run of other settings only when forced (kept beside it)."""
    try:
        return runs.open_run(run_dir, profile, overrides).cfg
    except runs.ConfigMismatch:
        if not force:
            raise
    old = runs.read_config(run_dir / runs.CONFIG_FILE)
    backup = run_dir.with_name(f"{run_dir.name}.replaced-{old['config_hash']}")
    run_lock.acquire(run_dir, "--force: replacing the run")  # never move a run from under its writer
    log.warning("--force: moving the run of other settings to %s", backup)
    shutil.move(str(run_dir), str(backup))
    run_lock.release(run_dir)
    (backup / run_lock.HOLDER_FILE).unlink(missing_ok=True)  # it named this process, which let go of it
    return runs.open_run(run_dir, profile, overrides).cfg


def _step_settings(step: Step, cfg: config.RunConfig) -> dict[str, Any]:
    return {key: getattr(cfg, key) for key in step.reads}


def ran_with(step: Step, timings: dict[str, Any], cfg: config.RunConfig) -> bool:
    """Whether `timings` records `step` as finished with `cfg`: its identity, and the later settings it reads."""
    entry = timings.get(step.name, {})
    same = entry.get("config_hash") == config.config_hash(cfg)
    return same and entry.get("settings", {}) == _step_settings(step, cfg)


def _is_done(run_dir: Path, step: Step, timings: dict[str, Any], cfg: config.RunConfig) -> bool:
    return ran_with(step, timings, cfg) and all((run_dir / o).exists() for o in step.outputs)


def _execute(step: Step, run_dir: Path, profile: str, overrides: dict[str, Any]) -> Path:
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    executed = run_dir / "executed" / f"{step.name}.ipynb"
    executed.unlink(missing_ok=True)  # an earlier attempt's notebook must not pass for this one's
    # papermill rewrites its output after every cell: into a side file, kept only when whole (a kill or a full
    # disk mid-write must not leave a broken notebook under the name a reader opens)
    partial = executed.with_name(f"{step.name}.partial.ipynb")
    kernel_log = console.log_path(run_dir, step.name)
    failure = None
    try:
        with console.routed(kernel_log) as kernel, console.Progress(step.name, step.notebook) as progress:
            papermill.execute_notebook(
                str(step.notebook),
                str(partial),
                parameters={"run_dir": str(run_dir), "profile": profile, "overrides": overrides},
                kernel_name="python3",
                cwd=str(NOTEBOOKS),
                **kernel,
                **progress.hooks(),
            )
    except OSError as err:
        _keep_if_whole(partial, executed)
        files.raise_if_full(err, err.filename or partial, None)
        raise
    except PapermillExecutionError as err:
        failure = f"{err.ename}: {err.evalue.splitlines()[0] if err.evalue else ''}"
    except DeadKernelError:
        failure = (
            "its kernel died (killed, or out of memory). Rerun the pipeline: finished steps are skipped and "
            "sampling resumes"
        )
    if _keep_if_whole(partial, executed):
        see = f"Open the executed notebook for the full traceback: {executed}"
    else:
        see = "Its executed notebook could not be written whole."
    see += f"\nIts log (all the notebook and its kernel wrote): {kernel_log}"
    if failure is None:
        return executed
    raise StepFailed(f"Step {step.name} failed: {failure}\n{see}")


def _keep_if_whole(partial: Path, executed: Path) -> bool:
    """Rename papermill's side file to the executed notebook if it is whole JSON; else delete it."""
    try:
        json.loads(partial.read_text(encoding="utf-8"))
        os.replace(partial, executed)
        return True
    except (OSError, ValueError):  # absent, unreadable, or cut mid-write
        partial.unlink(missing_ok=True)
        return False


def run(
    profile: str,
    run_dir: str | Path,
    steps: Sequence[Step] = STEPS,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Execute `steps` in order; returns the run's timings (wall seconds per step)."""
    overrides = overrides or {}
    run_dir = Path(run_dir).resolve()
    held_before = run_lock.holds(run_dir)
    try:
        cfg = _prepare(run_dir, profile, overrides, force)  # makes this process the run's writer
        return _run_steps(run_dir, profile, cfg, steps, overrides, force)
    finally:
        if not held_before:
            run_lock.release(run_dir)


def _run_steps(
    run_dir: Path,
    profile: str,
    cfg: config.RunConfig,
    steps: Sequence[Step],
    overrides: dict[str, Any],
    force: bool,
) -> dict[str, Any]:
    cfg_hash = config.config_hash(cfg)
    timings_path = run_dir / TIMINGS
    timings = read_timings(timings_path)
    for step in steps:
        if not step.notebook.exists():
            log.info(console.step_line(step.name, f"skipped: no notebook yet ({step.notebook.name})"))
            continue
        if not force and _is_done(run_dir, step, timings, cfg):
            log.info(console.step_line(step.name, f"skipped: done earlier for config {cfg_hash}"))
            continue
        run_lock.acquire(run_dir, step.name)  # a second writer's error names the step
        since, start = time.time(), time.perf_counter()
        _execute(step, run_dir, profile, overrides)
        timings[step.name] = {"wall_s": round(time.perf_counter() - start, 1), "config_hash": cfg_hash}
        if step.reads:
            timings[step.name]["settings"] = _step_settings(step, cfg)
        atomic_write_text(timings_path, json.dumps(timings, indent=2) + "\n")
        wrote = console.written(run_dir, step.outputs, since)
        log.info(console.ran_line(step.name, timings[step.name]["wall_s"], wrote))
    return timings


def read_timings(path: Path) -> dict[str, Any]:
    """Each finished step's wall time and config hash; a file that does not read is refused, naming the fix."""
    if not path.exists():
        return {}
    fix = "Delete it and rerun: every step runs again, and skips the work whose outputs are there."
    timings = files.read_json_object(path, fix, "an object of steps")
    if not all(
        isinstance(t, dict)
        and not files.type_problem(t.get("wall_s"), float)
        and isinstance(t.get("config_hash"), str)
        for t in timings.values()
    ):
        raise files.BadInput(f"{path} is not an object of steps, each with its wall_s and config_hash. {fix}")
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="execute the notebooks in order")
    go.add_argument("--profile", required=True, help=f"one of: {', '.join(config.PROFILES)}")
    go.add_argument("--run-dir", required=True, type=Path, help="e.g. outputs/smoke")
    go.add_argument("--only", help="comma-separated step numbers, e.g. 01,02")
    go.add_argument("--from", dest="start", help="first step number")
    go.add_argument("--to", dest="stop", help="last step number")
    go.add_argument(
        "--force", action="store_true", help="rerun finished steps; replace a run of other settings"
    )
    go.add_argument("-p", dest="params", action="append", default=[], help="override a setting: key=value")
    sub.add_parser("list-profiles", help="show the profiles and their settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.command == "list-profiles":
        for name, cfg in config.PROFILES.items():
            print(f"{name}: {json.dumps(config.to_dict(cfg))}")
        return 0
    try:
        steps = select_steps(args.only, args.start, args.stop)
        timings = run(args.profile, args.run_dir, steps, parse_overrides(args.params), args.force)
    except (
        StepFailed,
        files.DiskFull,
        run_lock.RunBusy,
        accelerator.NoGPU,
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = sum(t["wall_s"] for t in timings.values())
    print(
        f"done: {len(timings)} steps recorded, {console.duration(total)} in all; timings in "
        f"{args.run_dir / TIMINGS}, the executed notebooks in executed/, their logs in {console.LOGS}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
