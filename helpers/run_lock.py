"""One writer per run directory: the OS's advisory lock (`flock`) on `<run>/.writer.lock`, and who holds it.

The OS drops the lock when its process ends, however it ends (a SIGKILL, a dead Colab runtime), so a dead holder
never blocks: the next writer takes the run over and says whose it was. `.writer.json` beside the lock names the
holder (PID, host, step, since) for the error a second writer gets. Processes the holder starts (papermill's kernel
for each notebook) write for it: they inherit `GSM8K_RUN_WRITERS` and are let in while that holder holds the lock.
Readers take no lock. `flock` is local to a machine: two machines writing one network folder are not kept apart.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from helpers.files import atomic_write_text

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"
HOLDER_FILE = ".writer.json"
# JSON {run root: PID}: the runs whose lock an ancestor of this process holds
INHERITED = "GSM8K_RUN_WRITERS"

_held: dict[Path, int] = {}  # run root -> descriptor of the lock this process holds
_watching: list[int] = []  # the parent whose end ends this process (a thread watches it)


class RunBusy(RuntimeError):
    """Another live process writes this run directory."""


def acquire(root: Path, step: str | None = None) -> None:
    """Become the run's one writer (again, if this process is already), or say who is.

    Args:
        step: what this process is doing, shown to a second writer (default: the notebook or command line).
    """
    root = root.resolve()
    if root in _held:
        if step is not None:
            _write_holder(root, step)
        return
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_holder(root)
        if holder is not None and _inherited(root) == holder.get("pid"):
            # our ancestor holds it and we write on its behalf (a notebook the pipeline runs): never without it
            if holder["pid"] == os.getppid() and not _watching:
                _watching.append(holder["pid"])
                threading.Thread(target=_end_with_parent, args=(holder["pid"],), daemon=True).start()
            return
        raise RunBusy(_busy_message(root, holder)) from None
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s: this filesystem has no locks (%s); one writer at a time is up to you", root, err)
        return
    previous = read_holder(root)
    if previous is not None and previous.get("host") != socket.gethostname():
        log.warning(
            "%s: last written by %s. A lock cannot see other machines: make sure that writer has stopped.",
            root,
            describe(previous),
        )
    elif previous is not None and previous.get("pid") != os.getpid():
        log.warning(
            "%s: taking the run over from %s, which ended without releasing it", root, describe(previous)
        )
    _held[root] = fd
    _write_holder(root, step)
    os.environ[INHERITED] = json.dumps({**_inherited_runs(), str(root): os.getpid()})


def held() -> set[Path]:
    """The runs whose lock this process holds."""
    return set(_held)


def holds(root: Path) -> bool:
    """Whether this process holds the run's lock."""
    return root.resolve() in _held


def release(root: Path) -> None:
    """Stop being the run's writer (the end of a process does the same)."""
    root = root.resolve()
    fd = _held.pop(root, None)
    if fd is None:
        return
    # Before unlocking: a holder file beside a free lock means "died"
    (root / HOLDER_FILE).unlink(missing_ok=True)
    fcntl.flock(fd, fcntl.LOCK_UN)  # a child forked meanwhile shares the lock: unlock for it too
    os.close(fd)
    os.environ[INHERITED] = json.dumps({r: p for r, p in _inherited_runs().items() if r != str(root)})


def read_holder(root: Path) -> dict[str, Any] | None:
    """Who holds (or last held, if it died) the run's lock; None when nobody wrote it down."""
    try:
        holder = json.loads((root / HOLDER_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # absent, or written by no version of this module
        return None
    return holder if isinstance(holder, dict) else None


def describe(holder: dict[str, Any]) -> str:
    """'PID 123 on host h (step 03_sft, since 2026-11-30 15:02:11)'."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"PID {holder.get('pid')} on host {holder.get('host')} (step {holder.get('step')}, since {since})"


def _busy_message(root: Path, holder: dict[str, Any] | None) -> str:
    who = describe(holder) if holder else "another process"
    return (
        f"{root} is being written by {who}. One writer per run: wait for it to finish, or stop it (Ctrl-C in its "
        f"terminal; Kernel > Shut Down for a notebook), then rerun - finished steps are skipped and sampling resumes. "
        f"To look at its results meanwhile, read its files or use runs.open_run(..., read_only=True); to run "
        f"something else beside it, use another run directory."
    )


def _write_holder(root: Path, step: str | None) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": step or os.environ.get("JPY_SESSION_NAME") or " ".join(sys.argv)[:200],
        "since": round(time.time()),
    }
    atomic_write_text(root / HOLDER_FILE, json.dumps(holder) + "\n")


def _end_with_parent(parent: int) -> None:
    """End this process once its parent, the run's writer, is gone (a kill -9 of the pipeline): its lock is free
    then, and a rerun must not meet this process still writing."""
    while os.getppid() == parent:
        time.sleep(0.5)
    log.error("the run's writer (PID %d) is gone: ending this process, which wrote for it", parent)
    os._exit(70)


def _inherited(root: Path) -> int | None:
    return _inherited_runs().get(str(root))


def _inherited_runs() -> dict[str, int]:
    try:
        runs = json.loads(os.environ.get(INHERITED) or "{}")
    except ValueError:  # set by hand, or by no version of this module
        return {}
    return runs if isinstance(runs, dict) else {}
