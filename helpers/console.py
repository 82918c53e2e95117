"""What a headless run shows: one line per step, a bar over the running notebook's cells (on a terminal
only), and each step's log, `<run>/logs/<step>.log`, for what nobody can act on from the terminal.

The log is the step's transcript: papermill's path lines, the kernel's start-up warning about TCP, everything
the notebook prints, logs and warns, and what is written below Python (torch's C++ NUMA-binding warning when
vLLM's CPU engine starts, child processes). The executed notebook keeps the notebook's Python output, not the
C++ lines. Papermill's warnings and errors, and the pipeline's, still reach the terminal. Which steps run, and
in what order, is `pipeline`'s business.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

LOGS = "logs"
FIGURES = "figures"
NAME_WIDTH = len("02_rejection_filtering")  # the longest step name (a test checks): the times line up
TIME_WIDTH = len("59 min 59 s")
FIGURES_NAMED = 2  # a step that draws more is summed up as "N figures"
# papermill logs the notebook's paths and kernel at INFO and its trouble at WARNING; nbclient logs through it
PAPERMILL = logging.getLogger("papermill")


def log_path(run_dir: Path, name: str) -> Path:
    """Where step `name` of the run at `run_dir` logs: `<run>/logs/<name>.log`."""
    return run_dir / LOGS / f"{name}.log"


def duration(seconds: float) -> str:
    """A wall time as a reader takes it in.

    >>> duration(6.1), duration(212), duration(7530)
    ('6 s', '3 min 32 s', '2 h 05 min')
    """
    s = round(seconds)
    if s < 100:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def step_line(name: str, text: str) -> str:
    """`name` padded so that what follows lines up across the steps of a run."""
    return f"{name:<{NAME_WIDTH}}  {text}"


def ran_line(name: str, seconds: float, wrote: Sequence[str]) -> str:
    """'03_sft  13 s  models/SFT_1, figures/train_SFT_1.png'."""
    return step_line(name, f"{duration(seconds):>{TIME_WIDTH}}  {', '.join(wrote)}")


def written(run_dir: Path, outputs: Sequence[str], since: float) -> list[str]:
    """What a step wrote, as a reader names it: its outputs (a model's folder, not its manifest), then the
    figures it drew (modified at or after `since`, a `time.time()`)."""
    shown = [o.removesuffix("/manifest.json") for o in outputs]
    figures = sorted(
        p.name for p in (run_dir / FIGURES).glob("*") if p.is_file() and p.stat().st_mtime >= since
    )
    if len(figures) > FIGURES_NAMED:
        return [*shown, f"{len(figures)} figures"]
    return [*shown, *(f"{FIGURES}/{name}" for name in figures)]


# The last count a notebook's own tqdm bar printed ('sampling:  40%|####  | 26/64 [...]'), to show beside ours
NOTEBOOK_COUNT = re.compile(
    r"(?:([^\r\n:|]{1,60}):\s+)?\d+%\|[^|\r\n]*\|\s*(\d+(?:\.\d+)?[kM]?/\d+(?:\.\d+)?[kM]?)"
)
TICK_S = 1.0  # the bar's clock moves during a long cell too
DRAIN_S = 5.0  # how long a step's end waits for the last of its kernel's output
# ipykernel by default copies what is written below Python (C++ warnings, child processes) into the notebook
# and the log both, and the notebook's own output (prints, logging, warnings) into the notebook alone. Turned
# round, the log is the notebook's whole transcript, each line once, and the notebook keeps Python's output.
KERNEL_ARGUMENTS = ["--IPKernelApp.quiet=False", "--IPKernelApp.capture_fd_output=False"]
# debugpy's four-line warning at every kernel start that Python 3.11's frozen modules may hide breakpoints
KERNEL_ENV = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}


class Progress:
    """A bar over a notebook's cells under the step's name, with the notebook's own last count (e.g. 'sampling
    26/64'), ticking every second: on a terminal only (tqdm's `disable=None`); the step's line replaces it.

    `hooks()` are papermill's arguments that drive it: nbclient's `on_cell_start`, and the notebook's stderr
    stream (where its tqdm bars go) through papermill's `stderr_file`.
    """

    def __init__(self, name: str, notebook: Path, file: IO[str] | None = None) -> None:
        from tqdm import tqdm

        # the notebook's cells and the one papermill adds for the parameters
        cells = len(json.loads(notebook.read_text(encoding="utf-8"))["cells"]) + 1
        self.bar = tqdm(
            total=cells,
            desc=name.ljust(NAME_WIDTH),
            file=file or sys.stdout,
            disable=None,
            leave=False,
            bar_format="{desc}  {elapsed:>8}  {bar:24} {n_fmt}/{total_fmt} cells{postfix}",  # tqdm adds ", "
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> Progress:
        if not self.bar.disable:
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self.bar.close()

    def hooks(self) -> dict[str, Any]:
        return {"progress_bar": False, "on_cell_start": self.cell_started, "stderr_file": self}

    def cell_started(self, cell: Any, cell_index: int) -> None:
        self.bar.n = cell_index  # the cells before this one are done
        self.bar.refresh()

    def write(self, text: str) -> None:
        """The notebook's stderr as it arrives: keep the last count of its own bars."""
        counts = NOTEBOOK_COUNT.findall(text)
        if counts:
            what, count = counts[-1]
            shown = f"{what.strip()[:24]} {count}".strip()
            self.bar.set_postfix_str(shown, refresh=False)  # the next tick shows it

    def flush(self) -> None:
        pass

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            self.bar.refresh()


class _Forward(logging.Handler):
    """Hand a record to the root logger's handlers (the terminal), as propagation does, above the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode():
            logging.getLogger().handle(record)


class LogFile:
    """The step's log, written as it comes and best-effort: a full disk costs log lines, never the step."""

    def __init__(self, path: Path) -> None:
        # appending: this process's records and the kernel's output (two threads) each land whole at the end
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def write(self, data: str | bytes) -> None:
        if self.fd < 0:  # closed: its number may be another file's by now
            return
        with contextlib.suppress(OSError):  # a full disk
            os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)


def _drain(pipe: int, log: LogFile) -> None:
    """Copy what the kernel writes into the log until the kernel (and whatever inherited its output) is gone."""
    with contextlib.suppress(OSError):
        for chunk in iter(lambda: os.read(pipe, 1 << 16), b""):
            log.write(chunk)
    os.close(pipe)


@contextlib.contextmanager
def routed(path: Path) -> Iterator[dict[str, Any]]:
    """Start the step's log at `path` (an earlier attempt's goes); while inside, papermill's info goes there and
    its warnings to both. Yields papermill's engine arguments that start the kernel with its stdout and stderr
    on a pipe that a thread here copies into the log: on a full disk the log loses lines, and the kernel's own
    writes still never fail."""
    path.parent.mkdir(exist_ok=True)
    log = LogFile(path)
    reader, writer = os.pipe()
    drain = threading.Thread(target=_drain, args=(reader, log), daemon=True)
    drain.start()
    to_log = logging.StreamHandler(log)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    up = _Forward(logging.WARNING)
    saved = PAPERMILL.level, PAPERMILL.propagate
    PAPERMILL.setLevel(logging.INFO)
    PAPERMILL.propagate = False
    PAPERMILL.addHandler(to_log)
    PAPERMILL.addHandler(up)
    try:
        yield {"kernel_manager_class": kernel_manager(writer), "extra_arguments": KERNEL_ARGUMENTS}
    finally:
        PAPERMILL.removeHandler(up)
        PAPERMILL.removeHandler(to_log)
        PAPERMILL.setLevel(saved[0])
        PAPERMILL.propagate = saved[1]
        os.close(writer)  # the kernel has ended: once no child of it holds the pipe either, the drain ends
        drain.join(DRAIN_S)
        if not drain.is_alive():  # else a child still writes: the log stays open for it (one descriptor)
            log.close()


def kernel_manager(output: int) -> type:
    """A jupyter_client kernel manager whose kernel writes its stdout and stderr to the file descriptor `output`
    (and so do the processes it starts, which inherit them) instead of this process's terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class StepKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            env = {**(kw.get("env") or os.environ), **KERNEL_ENV}
            await super()._async_launch_kernel(
                kernel_cmd, **{**kw, "stdout": output, "stderr": output, "env": env}
            )

    return StepKernelManager
