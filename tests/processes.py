"""Process trees read from /proc: what a test started, and whether it is still alive (Linux only)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (a server's engine processes, a pipeline's kernels), read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything below it, as a dead machine would stop them: none gets to clean up."""
    seen: set[int] = set()
    while True:
        targets = ({pid} | descendants(pid) | descendants_of(seen)) - {os.getpid()}
        targets = {p for p in targets if alive(p)}
        if not targets:
            return
        for p in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        seen |= targets


def descendants_of(pids: set[int]) -> set[int]:
    """The union of `descendants` over `pids`: children forked while their parent was being killed."""
    return set().union(*(descendants(p) for p in pids)) if pids else set()
