"""The LLM judge's protocol against a local stand-in endpoint: `pytest tests/unit/test_judge.py`.

The stand-in can answer late, refuse with 429/503 and count the requests in flight, which a real server will not
do on demand; `tests/e2e/test_local_judge.py` runs the same code against vLLM's own server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from helpers import endpoint as api
from helpers import judge


class FakeJudge(BaseHTTPRequestHandler):
    """Answers YES when the reference answer appears in the student's response; records each request.

    `failures`: statuses to send (in order) before answering; `delay`: seconds before each reply;
    `reply`: a fixed reply instead of YES/NO; `served`: the model names `/v1/models` lists.
    """

    requests: list[dict] = []
    failures: list[int] = []
    delay = 0.0
    reply: str | None = None
    served = ["fake-judge"]
    answer_only = 10**9  # after this many answers, every request gets 503
    retry_after = "0"
    answered = 0
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # a client that timed out has gone
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._send(200, {"object": "list", "data": [{"id": name} for name in FakeJudge.served]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FakeJudge.lock:
            FakeJudge.requests.append({"auth": self.headers.get("Authorization"), "path": self.path, **body})
            status = FakeJudge.failures.pop(0) if FakeJudge.failures else 200
            retry_after = FakeJudge.retry_after
            if status == 200 and FakeJudge.answer_only <= 0:
                status = 503
            FakeJudge.answer_only -= status == 200
            FakeJudge.in_flight += 1
            FakeJudge.most_in_flight = max(FakeJudge.most_in_flight, FakeJudge.in_flight)
        try:
            time.sleep(FakeJudge.delay)
            if status != 200:
                self._send(status, {"error": "busy"}, {"Retry-After": retry_after} if status == 429 else None)
                return
            prompt = body["messages"][0]["content"]
            gold = prompt.split("Reference answer: ")[1].split("\n")[0]
            response = prompt.split("Student's response:\n")[1].split("\n\nIs the student's")[0]
            content = FakeJudge.reply or ("YES" if gold in response else "NO")
            self._send(200, {"choices": [{"message": {"content": content}}]})
            with FakeJudge.lock:
                FakeJudge.answered += 1
        finally:
            with FakeJudge.lock:
                FakeJudge.in_flight -= 1

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    FakeJudge.requests, FakeJudge.failures, FakeJudge.delay, FakeJudge.reply = [], [], 0.0, None
    FakeJudge.served, FakeJudge.answer_only, FakeJudge.retry_after = ["fake-judge"], 10**9, "0"
    FakeJudge.in_flight = FakeJudge.most_in_flight = FakeJudge.answered = 0
    monkeypatch.setenv(judge.ENV_URL, f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv(judge.ENV_MODEL, "fake-judge")
    monkeypatch.setenv(judge.ENV_KEY, "secret-key")
    monkeypatch.setattr(api, "BACKOFF_S", 0.01)
    yield server
    server.shutdown()


def _graded(n: int) -> tuple[pd.DataFrame, dict[str, str]]:
    graded = pd.DataFrame(
        {
            "problem_id": [f"p{i}" for i in range(n)],
            "sample_idx": [0] * n,
            "completion": [f"so it is {i} apples" for i in range(n)],
            "gold": [str(i if i % 2 else i + 1) for i in range(n)],  # odd rows right, even rows wrong
        }
    )
    return graded, {f"p{i}": f"{i}+0?" for i in range(n)}


def test_without_environment_the_judge_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (judge.ENV_URL, judge.ENV_MODEL, judge.ENV_KEY):
        monkeypatch.delenv(key, raising=False)
    assert not judge.configured() and judge.endpoint() is None
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
    assert {r["path"] for r in FakeJudge.requests} == {"/v1/chat/completions"}
    assert {r["model"] for r in FakeJudge.requests} == {"fake-judge"}
    assert judge.judge_samples(graded, questions, cache).tolist() == [True, False, True]
    assert len(FakeJudge.requests) == 3  # all cached: nothing asked again
    assert "secret-key" not in cache.read_text()


def test_a_local_judge_needs_no_key(endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(judge.ENV_KEY)
    graded, questions = _graded(2)
    assert judge.judge_samples(graded, questions, tmp_path / "j.jsonl").tolist() == [False, True]
    assert FakeJudge.requests[0]["auth"] is None  # no "Bearer " header with an empty key
    assert "no key" in judge.status()


def test_a_new_judge_model_or_text_is_asked_again_and_a_cut_line_is_dropped(
    endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graded = pd.DataFrame({"problem_id": ["p1"], "sample_idx": [0], "completion": ["7"], "gold": ["7"]})
    cache = tmp_path / "judge.jsonl"
    judge.judge_samples(graded, {"p1": "3+4?"}, cache)
    FakeJudge.served = ["fake-judge", "another-judge"]
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


def test_status_names_only_the_host_and_a_url_with_credentials_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1?key=abc")
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    monkeypatch.setenv(judge.ENV_KEY, "sk-secret")
    line = judge.status()
    assert "abc" not in line and "sk-secret" not in line and "127.0.0.1:9" in line
    assert "sk-secret" not in repr(judge.endpoint())
    monkeypatch.setenv(judge.ENV_URL, "http://user:pw@127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="without credentials") as refused:
        judge.status()
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (judge.ENV_CONCURRENCY, "0"),  # no worker would ever ask
        (judge.ENV_CONCURRENCY, "four"),  # not a number
        (judge.ENV_CONCURRENCY, "-3"),  # negative
        (judge.ENV_TIMEOUT, "0"),  # every request would time out at once
        (judge.ENV_TIMEOUT, "soon"),  # not a number
    ],
)
def test_bad_pool_settings_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1")
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}='{value}' is not a positive"):
        judge.endpoint()


def test_a_url_without_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(judge.ENV_URL, "127.0.0.1:8000/v1")
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    with pytest.raises(ValueError, match="must be an http"):
        judge.endpoint()


def test_an_unreachable_endpoint_fails_before_judging_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(judge.ENV_URL, "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    monkeypatch.setenv(judge.ENV_MODEL, "m")
    graded, questions = _graded(3)
    started = time.monotonic()
    with pytest.raises(
        judge.JudgeError, match=r"unreachable at 127\.0\.0\.1:9 \(ConnectionRefusedError"
    ) as err:
        judge.judge_samples(graded, questions, tmp_path / "j.jsonl")
    assert "\n" not in str(err.value) and time.monotonic() - started < 5  # refused: no retries
    assert not (tmp_path / "j.jsonl").exists() or (tmp_path / "j.jsonl").read_text() == ""


def test_an_unknown_model_fails_before_judging(
    endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(judge.ENV_MODEL, "gpt-5")
    graded, questions = _graded(2)
    with pytest.raises(judge.JudgeError, match="does not serve JUDGE_MODEL='gpt-5'; it serves: fake-judge"):
        judge.judge_samples(graded, questions, tmp_path / "j.jsonl")
    assert FakeJudge.requests == []


def test_429_and_5xx_are_retried_with_backoff(endpoint, tmp_path: Path) -> None:
    FakeJudge.failures = [429, 503, 500, 429]
    graded, questions = _graded(2)
    assert judge.judge_samples(graded, questions, tmp_path / "j.jsonl").tolist() == [False, True]
    assert len(FakeJudge.requests) == 6  # four refusals, then two answers


def test_a_time_out_is_retried(endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(judge.ENV_TIMEOUT, "0.3")
    FakeJudge.delay = 0.6
    graded, questions = _graded(1)
    recover = threading.Timer(0.5, lambda: setattr(FakeJudge, "delay", 0.0))  # the server recovers
    recover.start()
    assert judge.judge_samples(graded, questions, tmp_path / "j.jsonl").tolist() == [False]
    assert len(FakeJudge.requests) >= 2
    recover.join()


def test_a_lasting_failure_stops_with_the_cause_and_keeps_what_was_judged(endpoint, tmp_path: Path) -> None:
    graded, questions = _graded(2)
    cache = tmp_path / "j.jsonl"
    judge.judge_samples(graded.iloc[:1], questions, cache)
    FakeJudge.failures = [503] * (api.RETRIES + 1)
    with pytest.raises(judge.JudgeError, match=rf"failed after {api.RETRIES + 1} attempts \(HTTP 503"):
        judge.judge_samples(graded, questions, cache)
    assert len(cache.read_text().splitlines()) == 1  # the first verdict is kept
    assert judge.judge_samples(graded, questions, cache).tolist() == [False, True]  # and the run resumes


def test_verdicts_are_kept_as_they_come_when_the_server_fails_midway(endpoint, tmp_path: Path) -> None:
    FakeJudge.answer_only = 6
    graded, questions = _graded(20)
    cache = tmp_path / "j.jsonl"
    with pytest.raises(judge.JudgeError, match="HTTP 503"):
        judge.judge_samples(graded, questions, cache)
    assert len(cache.read_text().splitlines()) == 6  # each answer was written when it came, not at the end
    FakeJudge.answer_only = 10**9
    assert judge.judge_samples(graded, questions, cache).tolist() == [i % 2 == 1 for i in range(20)]
    # after the failure the queued questions were dropped: about one pool's worth retried (then 14 resumed);
    # asking all 14 unanswered ones to the end would have taken 14 * 7 requests
    assert len(FakeJudge.requests) <= 6 + (api.DEFAULT_CONCURRENCY + 2) * (api.RETRIES + 1) + 14


class InterruptedQuestions(dict):
    """The questions, until the `after`-th lookup: then Ctrl-C (lookups happen in the caller's thread)."""

    def __init__(self, questions: dict[str, str], after: int) -> None:
        super().__init__(questions)
        self.left = after

    def __getitem__(self, key: str) -> str:
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().__getitem__(key)


def test_an_interrupt_keeps_every_verdict_that_came(endpoint, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(judge.ENV_CONCURRENCY, "2")
    FakeJudge.delay = 0.1
    graded, questions = _graded(30)
    cache = tmp_path / "j.jsonl"
    with pytest.raises(KeyboardInterrupt):
        judge.judge_samples(graded, InterruptedQuestions(questions, after=12), cache)
    assert 0 < FakeJudge.answered == len(cache.read_text().splitlines())  # nothing answered was lost
    assert len(FakeJudge.requests) <= 12  # the queued questions were dropped, not asked


def test_a_lasting_failure_wakes_the_workers_waiting_to_retry(endpoint, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(judge.ENV_CONCURRENCY, "2")
    monkeypatch.setattr(api, "BACKOFF_S", 30.0)
    FakeJudge.failures = [503, 401]  # one worker backs off for 30 s, the other fails for good
    graded, questions = _graded(2)
    started = time.monotonic()
    with pytest.raises(judge.JudgeError, match="failed after 1 attempt \\(HTTP 401"):
        judge.judge_samples(graded, questions, tmp_path / "j.jsonl")
    assert time.monotonic() - started < 5 and len(FakeJudge.requests) == 2


def test_a_quota_that_returns_in_hours_stops_the_run(endpoint, tmp_path: Path) -> None:
    FakeJudge.failures, FakeJudge.retry_after = [429], "86400"
    graded, questions = _graded(1)
    with pytest.raises(judge.JudgeError, match="asks to wait 86400 s"):
        judge.judge_samples(graded, questions, tmp_path / "j.jsonl")


def test_a_refused_key_is_named(endpoint, tmp_path: Path) -> None:
    FakeJudge.failures = [401]
    graded, questions = _graded(1)
    with pytest.raises(
        judge.JudgeError, match="after 1 attempt \\(HTTP 401: the key was refused; check JUDGE_API_KEY"
    ):
        judge.judge_samples(graded, questions, tmp_path / "j.jsonl")
    assert len(FakeJudge.requests) == 1  # not retried


def test_requests_run_concurrently_within_the_pool_size(
    endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(judge.ENV_CONCURRENCY, "3")
    FakeJudge.delay = 0.2
    graded, questions = _graded(12)
    started = time.monotonic()
    verdicts = judge.judge_samples(graded, questions, tmp_path / "j.jsonl")
    assert verdicts.tolist() == [i % 2 == 1 for i in range(12)]  # order follows the samples, not completion
    assert FakeJudge.most_in_flight == 3
    assert time.monotonic() - started < 12 * 0.2  # faster than one at a time


def test_a_reply_that_is_neither_yes_nor_no_counts_as_wrong_and_is_logged(
    endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    FakeJudge.reply = "The student"
    graded, questions = _graded(2)
    cache = tmp_path / "j.jsonl"
    with caplog.at_level(logging.WARNING, logger="helpers.judge"):
        assert judge.judge_samples(graded, questions, cache).tolist() == [False, False]
    assert "2 of 2 replies were neither YES nor NO" in caplog.text
    assert all(json.loads(line)["reply"] == "The student" for line in cache.read_text().splitlines())
