"""One verdict line per check, `PASS|FAIL|SKIP <check>: <detail>`, shared by the GPU scripts (standard library
only: scripts/gpu_check.py imports it before the kit is installed)."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable

VERDICTS = ("PASS", "FAIL", "SKIP")


class Checks:
    """Runs named checks in order; a check whose prerequisite did not pass is skipped, not run."""

    def __init__(self) -> None:
        self.results: dict[str, str] = {}
        self.lines: list[str] = []  # every verdict line, in order

    def run(self, name: str, check: Callable[[], str], needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if self.results.get(n) != "PASS"]
        if missing:
            self.skip(name, f"needs {', '.join(missing)}")
            return
        start = time.perf_counter()
        try:
            detail = check()
        except Exception as err:  # a verdict per check: report it and go on to the independent ones
            traceback.print_exc(file=sys.stderr)
            self._say("FAIL", name, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return
        self._say("PASS", name, f"{detail} ({time.perf_counter() - start:.1f} s)")

    def skip(self, name: str, why: str) -> None:
        self._say("SKIP", name, why)

    def _say(self, verdict: str, name: str, detail: str) -> None:
        self.results[name] = verdict
        self.lines.append(f"{verdict} {name}: {detail}")
        print(self.lines[-1], flush=True)

    def verdict(self) -> int:
        counts = {v: [n for n, r in self.results.items() if r == v] for v in VERDICTS}
        print(f"verdict: {len(counts['PASS'])} passed, {len(counts['SKIP'])} skipped, {len(counts['FAIL'])} failed"
              + (f"; failed: {', '.join(counts['FAIL'])}" if counts["FAIL"] else ""))  # fmt: skip
        return 1 if counts["FAIL"] else 0
