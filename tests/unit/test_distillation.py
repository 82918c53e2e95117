"""SFT_gold's and SFT_teacher's data: the gold solutions, the thinking rule, and an endpoint teacher against a
local stand-in server (`tests/e2e/test_local_teacher.py` runs it against vLLM's own server)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from helpers import answers, data, distillation, files, runs, sampling, training
from helpers import endpoint as api


def test_gold_solution_strips_the_calculator_and_ends_with_the_answer_line() -> None:
    gsm8k = data.load_gsm8k("train").select(range(50))
    for row in gsm8k:
        text = distillation.gold_solution(row["answer"], row["gold"])
        assert "<<" not in text and text.splitlines()[-1] == f"#### {row['gold']}"
        assert text.count("####") == 1 and answers.grade(text, row["gold"]).strict_correct
    assert distillation.gold_solution("3 + 4 = 7 pens", "7") == "3 + 4 = 7 pens\n#### 7"
    assert distillation.gold_solution("It costs 1,000.\n#### 1,000", "1000").endswith("\n#### 1000")


def test_gold_rows_are_one_right_row_per_problem() -> None:
    problems = data.make_arithmetic(6, seed=0, split="train")
    rows = distillation.gold_rows(problems)
    assert [r["problem_id"] for r in rows] == problems["id"]
    for row, question, gold in zip(rows, problems["question"], problems["gold"], strict=True):
        assert row["prompt"] == data.build_messages(question)
        assert answers.grade(row["completion"][0]["content"], gold).strict_correct


@pytest.mark.parametrize(
    ("text", "reasoning", "expected"),
    [
        ("<think>\nadd 2 and 2\n</think>\n\nSo 4.\n#### 4", None, ("add 2 and 2", "So 4.\n#### 4")),
        (
            "add 2 and 2</think>So 4.\n#### 4",
            None,
            ("add 2 and 2", "So 4.\n#### 4"),
        ),  # tag opened by the template
        ("So 4.\n#### 4", " add them ", ("add them", "So 4.\n#### 4")),
        ("So 4.\n#### 4", None, ("", "So 4.\n#### 4")),
        ("I think <think> is a tag. 4", None, ("", "I think <think> is a tag. 4")),
        (
            "<think>2+2 is 4, so #### 4",
            None,
            ("2+2 is 4, so #### 4", ""),
        ),  # cut off while thinking: no answer
        ("Sure.<think>add</think>#### 4", None, ("Sure.add", "#### 4")),
    ],
)
def test_split_thinking(text: str, reasoning: str | None, expected: tuple[str, str]) -> None:
    assert distillation.split_thinking(text, reasoning) == expected


def test_the_thinking_rule() -> None:
    assert distillation.for_student("plan", "So 4.\n#### 4", "strip") == "So 4.\n#### 4"
    assert distillation.for_student("plan", "So 4.\n#### 4", "keep") == "plan\n\nSo 4.\n#### 4"
    assert distillation.for_student("", "So 4.\n#### 4", "keep") == "So 4.\n#### 4"
    with pytest.raises(ValueError, match="Unknown teacher_thinking 'drop'"):
        distillation.for_student("plan", "4", "drop")


def test_cut_answer_follows_the_engines_rule() -> None:
    assert distillation.cut_answer("2+2=4\n#### 4\nExtra words", "stop") == ("2+2=4\n#### 4", "answer")
    assert distillation.cut_answer("2+2=4\n#### 4", "stop") == ("2+2=4\n#### 4", "answer")
    assert distillation.cut_answer("2+2 is", "length") == ("2+2 is", "length")
    assert distillation.cut_answer("four", None) == ("four", "stop")


class FakeTeacher(BaseHTTPRequestHandler):
    """A chat endpoint that thinks out loud, then answers a toy problem right (or wrong for `wrong` questions);
    `failures`: statuses to send first."""

    golds: dict[str, str] = {}
    wrong: set[str] = set()
    failures: list[int] = []
    requests: list[dict] = []
    lock = threading.Lock()

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._send(200, {"data": [{"id": "fake-teacher"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FakeTeacher.lock:
            FakeTeacher.requests.append({"auth": self.headers.get("Authorization"), **body})
            status = FakeTeacher.failures.pop(0) if FakeTeacher.failures else 200
        if status != 200:
            self._send(status, {"error": "busy"})
            return
        question = body["messages"][-1]["content"]
        gold = FakeTeacher.golds[question]
        said = str(int(gold) + 1) if question in FakeTeacher.wrong else gold
        content = f"<think>Let me add it up: {said}.</think>\nAdding up gives {said}.\n#### {said}\nDone."
        self._send(
            200,
            {
                "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 17},
            },
        )

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def teacher_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = runs.open_run(tmp_path / "run", "smoke", {"teacher": "endpoint", "n_train": 4})
    problems = run.problems("train")
    FakeTeacher.golds = dict(zip(problems["question"], problems["gold"], strict=True))
    FakeTeacher.wrong, FakeTeacher.failures, FakeTeacher.requests = {problems["question"][0]}, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTeacher)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    monkeypatch.setenv("TEACHER_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("TEACHER_MODEL", "fake-teacher")
    monkeypatch.setenv("TEACHER_API_KEY", "teacher-secret")
    monkeypatch.setattr(api, "BACKOFF_S", 0.01)
    yield run
    server.shutdown()


def test_an_endpoint_teacher_is_sampled_k_times_resumably_with_its_thinking_split_off(teacher_run) -> None:
    run, k = teacher_run, teacher_run.cfg.k
    FakeTeacher.failures = [503]
    graded = distillation.sample_teacher(run)
    assert len(graded) == 4 * k and not graded.duplicated(["problem_id", "sample_idx"]).any()
    assert set(graded["thinking"]) == {f"Let me add it up: {g}." for g in graded["pred_strict"]}
    assert all(
        text.endswith(f"\n#### {p}")
        for text, p in zip(graded["completion"], graded["pred_strict"], strict=True)
    )
    assert set(graded["finish_reason"]) == {"answer"} and set(graded["backend"]) == {"endpoint"}
    assert graded["requests"].sum() == 4 * k + 1  # one retry after the 503
    assert graded["lenient_correct"].sum() == 3 * k  # the first problem is answered wrong
    sent = FakeTeacher.requests[-1]
    assert sent["auth"] == "Bearer teacher-secret" and sent["max_tokens"] == run.cfg.teacher_max_new_tokens
    assert sent["messages"] == data.build_messages(sent["messages"][-1]["content"])
    assert len({r["seed"] for r in FakeTeacher.requests}) == 4 * k  # a seed per sample
    before = len(FakeTeacher.requests)
    again = distillation.sample_teacher(run)
    assert len(FakeTeacher.requests) == before  # a rerun asks for nothing
    pd.testing.assert_frame_equal(again, graded)
    stored = sampling.read_samples(run.root / distillation.TEACHER_SAMPLES)
    assert {"thinking", "requests"} <= set(stored.columns)


def test_the_datasets_keep_verified_answers_under_the_thinking_rule(teacher_run) -> None:
    run = teacher_run
    graded = distillation.sample_teacher(run)
    table = distillation.build(run, graded)
    assert table.loc[distillation.GOLD_FILE, "rows"] == 4
    teacher = files.read_jsonl(run.root / distillation.TEACHER_FILE)
    assert table.loc[distillation.TEACHER_FILE, "problems"] == 3  # the wrong answers are dropped
    assert len(teacher) == 3  # identical texts count once (max_per_problem distinct ones)
    assert all(not r["completion"][0]["content"].startswith("Let me") for r in teacher)
    keep = dataclasses.replace(run.cfg, teacher_thinking="keep")
    kept = distillation.teacher_rows(graded, run.questions("train"), keep)
    assert all(r["completion"][0]["content"].startswith("Let me add it up") for r in kept)
    training.read_rows(run.root / distillation.TEACHER_FILE, "sft")  # the trainers' format


def test_a_teacher_that_verifies_nothing_is_a_clear_error(teacher_run) -> None:
    FakeTeacher.wrong = set(FakeTeacher.golds)
    graded = distillation.sample_teacher(teacher_run)
    with pytest.raises(RuntimeError, match="answered none of 4 training problems correctly"):
        distillation.build(teacher_run, graded)
    assert not (teacher_run.root / distillation.TEACHER_FILE).exists()


def test_an_endpoint_teacher_without_environment_or_server_is_named(
    teacher_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEACHER_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(api.EndpointError, match=r"teacher unreachable at 127\.0\.0\.1:9"):
        distillation.sample_teacher(teacher_run)
    monkeypatch.delenv("TEACHER_MODEL")
    with pytest.raises(ValueError, match="needs TEACHER_BASE_URL and TEACHER_MODEL in the environment"):
        distillation.sample_teacher(teacher_run)
    monkeypatch.setenv("TEACHER_MODEL", "fake-teacher")
    line = distillation.describe_teacher(teacher_run.cfg)
    assert "fake-teacher at 127.0.0.1:9 (key from $TEACHER_API_KEY" in line and "teacher-secret" not in line


def test_teacher_tokens_are_counted_apart_from_the_students(teacher_run) -> None:
    run = teacher_run
    distillation.build(run, distillation.sample_teacher(run))
    record = training._data_record(run, distillation.TEACHER_FILE, distillation.TEACHER_SAMPLES, 3, "teacher")
    assert record["tokens_sampled"] == 0 and record["sampled_by"] == "fake-teacher"
    assert record["teacher_tokens"] == 17 * 4 * run.cfg.k and record["teacher_requests"] == 4 * run.cfg.k
    gold = training._data_record(run, distillation.GOLD_FILE, None, 4, "solutions")
    assert gold["tokens_sampled"] == 0 and gold["source"] == "solutions" and "teacher_tokens" not in gold
    with pytest.raises(ValueError, match="only 'solutions' comes without a samples file"):
        training._data_record(run, distillation.GOLD_FILE, None, 4, "samples")
