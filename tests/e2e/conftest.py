"""The end-to-end tests' shared local judge: vLLM's own OpenAI-compatible server with the CPU model, started once
per test session (about 40 s on 2 cores) and idle between uses."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from helpers import cpu_engine, judge, judge_server, models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def local_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[judge_server.Server | str]:
    """A running judge server, or the reason none can run on this machine (tests that need it skip with it)."""
    reason = cpu_engine.unavailable()
    if reason is not None:
        yield f"no local judge server: {reason}"
        return
    _, path = models.resolve_name(models.SMOLLM2_ALIAS)
    log = tmp_path_factory.mktemp("judge") / "server.log"
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(judge_server.serve(path, free_port(), log, max_model_len=2048))
        except (RuntimeError, TimeoutError) as err:  # the series still runs, without the judge
            yield f"the local judge server did not start: {err}"
            return
        yield server


@pytest.fixture
def judge_env(local_judge, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment that points the judge at the local server, set for this test; skips without a server."""
    if isinstance(local_judge, str):
        pytest.skip(local_judge)
    monkeypatch.delenv(judge.ENV_KEY, raising=False)  # a local server takes none
    for key, value in local_judge.env.items():
        monkeypatch.setenv(key, value)
    return local_judge.env
