"""The optional LLM judge against a local stand-in endpoint: `pytest tests/unit/test_judge.py`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

from helpers import judge


class FakeJudge(BaseHTTPRequestHandler):
    """Answers YES when the reference answer appears in the student's response; records each request."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"auth": self.headers["Authorization"], "path": self.path, **body})
        prompt = body["messages"][0]["content"]
        gold = prompt.split("Reference answer: ")[1].split("\n")[0]
        response = prompt.split("Student's response:\n")[1].split("\n\nIs the student's")[0]
        reply = {"choices": [{"message": {"content": "YES" if gold in response else "NO"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch):
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeJudge.requests = []
    monkeypatch.setenv(judge.ENV_URL, f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv(judge.ENV_MODEL, "fake-judge")
    monkeypatch.setenv(judge.ENV_KEY, "secret-key")
    yield
    server.shutdown()


def test_without_environment_the_judge_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (judge.ENV_URL, judge.ENV_MODEL, judge.ENV_KEY):
        monkeypatch.delenv(key, raising=False)
    assert not judge.configured()
    assert "LLM judge skipped: set JUDGE_BASE_URL and JUDGE_MODEL" in judge.status()
    with pytest.raises(RuntimeError, match="skipped"):
        judge.ask("q", "c", "1")


def test_verdicts_are_asked_once_and_cached(endpoint, tmp_path: Path) -> None:
    graded = pd.DataFrame(
        {
            "problem_id": ["p1", "p1", "p2"],
            "sample_idx": [0, 1, 0],
            "completion": ["so it is 7 apples", "it is 8", "twelve, i.e. 12"],
            "gold": ["7", "7", "12"],
        }
    )
    questions = {"p1": "3+4?", "p2": "6+6?"}
    cache = tmp_path / "judge_SFT_1.jsonl"
    assert judge.judge_samples(graded, questions, cache).tolist() == [True, False, True]
    assert len(FakeJudge.requests) == 3 and FakeJudge.requests[0]["auth"] == "Bearer secret-key"
    assert (
        FakeJudge.requests[0]["path"] == "/v1/chat/completions"
        and FakeJudge.requests[0]["model"] == "fake-judge"
    )
    assert judge.judge_samples(graded, questions, cache).tolist() == [True, False, True]
    assert len(FakeJudge.requests) == 3  # all cached: nothing asked again
    assert "secret-key" not in cache.read_text()


def test_a_new_judge_model_or_text_is_asked_again_and_a_cut_line_is_dropped(
    endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graded = pd.DataFrame({"problem_id": ["p1"], "sample_idx": [0], "completion": ["7"], "gold": ["7"]})
    cache = tmp_path / "judge.jsonl"
    judge.judge_samples(graded, {"p1": "3+4?"}, cache)
    monkeypatch.setenv(judge.ENV_MODEL, "another-judge")
    judge.judge_samples(graded, {"p1": "3+4?"}, cache)
    judge.judge_samples(graded.assign(completion="it is 8"), {"p1": "3+4?"}, cache)
    assert len(FakeJudge.requests) == 3
    with open(cache, "a") as f:
        f.write('{"problem_id": "p1", "sample_i')  # a run killed mid-write
    assert judge.judge_samples(graded, {"p1": "3+4?"}, cache).tolist() == [True]
    assert len(FakeJudge.requests) == 3
    judge.judge_samples(graded.assign(sample_idx=1), {"p1": "3+4?"}, cache)
    assert cache.read_text().splitlines()[-1].startswith('{"problem_id": "p1", "sample_idx": 1')


def test_status_names_only_the_host_and_failures_name_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(judge.ENV_URL, "http://user:pw@127.0.0.1:9/v1?key=abc")
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    assert "pw" not in judge.status() and "abc" not in judge.status() and "127.0.0.1" in judge.status()
    with pytest.raises(RuntimeError, match="did not answer .* Check JUDGE_BASE_URL"):
        judge.ask("q", "c", "1", timeout=2)
