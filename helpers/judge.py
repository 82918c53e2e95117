"""An optional checker: an LLM judge behind an OpenAI-compatible endpoint, off unless configured.

The endpoint comes from the environment only (`JUDGE_BASE_URL`, `JUDGE_MODEL`, key in `JUDGE_API_KEY`, none for
a local server), never from a notebook parameter, so no secret lands in an executed notebook. Built for the full
run's ~74,000 questions: a bounded pool of concurrent requests (`JUDGE_CONCURRENCY`), retries with backoff on
429, 5xx and time-outs, a check of the endpoint and model before the first question, and a JSONL cache of
verdicts per sample that an interrupted run resumes from. The pool, the retries and the check are `endpoint`'s
(shared with an endpoint teacher); starting a local judge server is `judge_server`'s job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from helpers import endpoint as api
from helpers.endpoint import Endpoint
from helpers.files import read_jsonl, repair_tail

log = logging.getLogger(__name__)

PREFIX, ROLE = "JUDGE", "LLM judge"
_NAMES = api.env_names(PREFIX)
ENV_URL, ENV_MODEL, ENV_KEY = _NAMES["url"], _NAMES["model"], _NAMES["key"]
ENV_CONCURRENCY, ENV_TIMEOUT = _NAMES["concurrency"], _NAMES["timeout"]
PROMPT = (
    "You grade answers to grade-school maths problems.\n\nProblem:\n{question}\n\nReference answer: {gold}\n\n"
    "Student's response:\n{completion}\n\nIs the student's final answer equal to the reference answer? "
    "Ignore the working and the formatting. Reply with exactly one word: YES or NO."
)
CACHE_KEYS = ("problem_id", "sample_idx", "completion_sha", "model")
JudgeError = api.EndpointError  # the judge cannot answer: one line naming the cause and the fix


def endpoint() -> Endpoint | None:
    """The configured endpoint, or None when `JUDGE_BASE_URL` or `JUDGE_MODEL` is unset."""
    return api.from_env(PREFIX, ROLE)


def configured() -> bool:
    """True when `JUDGE_BASE_URL` and `JUDGE_MODEL` are set."""
    return bool(os.environ.get(ENV_URL) and os.environ.get(ENV_MODEL))


def status() -> str:
    """One line for the notebook: which endpoint judges, or why the judge is skipped."""
    found = endpoint()
    if found is None:
        return (
            f"LLM judge skipped: set {ENV_URL} and {ENV_MODEL} (and {ENV_KEY} for a hosted API) in the "
            "environment to enable it."
        )
    key = f"key from ${ENV_KEY}" if found.key else "no key"
    return f"LLM judge: {found.model} at {found.host} ({key}, {found.concurrency} requests at a time)"


def check(target: Endpoint) -> None:
    """Before the first question: the endpoint answers and serves the model, or one `JudgeError` line says why."""
    api.check(target, f"unset {ENV_URL} to skip the judge")


def parse_verdict(reply: str) -> bool | None:
    """True for YES, False for NO (the first word, any case and punctuation), None for anything else.

    >>> parse_verdict(" Yes."), parse_verdict("NO"), parse_verdict("The answer is 5")
    (True, False, None)
    """
    words = reply.strip().split()
    first = words[0].strip(".,!:;*'\"").upper() if words else ""
    return {"YES": True, "NO": False}.get(first)


def ask(
    question: str,
    completion: str,
    gold: str,
    target: Endpoint | None = None,
    stop: threading.Event | None = None,
) -> tuple[bool | None, str]:
    """The judge's verdict on one completion (None when it answered neither YES nor NO) and its raw reply;
    `stop` ends its retries early."""
    target = target or endpoint()
    if target is None:
        raise RuntimeError(status())
    body = {
        "model": target.model,
        "messages": [
            {"role": "user", "content": PROMPT.format(question=question, gold=gold, completion=completion)}
        ],
        "temperature": 0,
        "max_tokens": 3,
    }
    choice, _, _ = api.chat(target, body, stop)
    if "content" not in choice["message"]:
        raise api.not_chat(KeyError("content"), target)
    reply = choice["message"]["content"] or ""
    return parse_verdict(reply), reply


def _key(problem_id: str, sample_idx: int, completion: str, model: str) -> tuple[str, int, str, str]:
    """A verdict belongs to one judge model and one completion text, not only to a sample's position."""
    digest = hashlib.sha256(completion.encode()).hexdigest()[:16]
    return problem_id, int(sample_idx), digest, model


def _read_cache(cache: Path) -> dict[tuple[str, int, str, str], bool]:
    """Cached verdicts, after cutting off a partial last line (a run killed mid-write: that one is asked again)."""
    repair_tail(cache)
    rows = read_jsonl(cache) if cache.exists() else []
    return {tuple(row[k] for k in CACHE_KEYS): row["judge_correct"] for row in rows}


def cached_verdicts(cache: str | os.PathLike, model: str) -> int:
    """How many verdicts of `model` the cache holds (a cut last line not counted); 0 without a cache."""
    cache = Path(cache)
    if not cache.exists():
        return 0
    with open(cache, encoding="utf-8") as f:
        return sum(line.endswith("\n") and json.loads(line)["model"] == model for line in f if line.strip())


def judge_samples(graded: pd.DataFrame, questions: Mapping[str, str], cache: str | os.PathLike) -> pd.Series:
    """`judge_correct` for every graded sample, asking concurrently for the samples not already in `cache`.

    A reply that is neither YES nor NO counts as wrong, is logged with its count and keeps its text in the cache.
    """
    target = endpoint()
    if target is None:
        raise RuntimeError(status())
    cache = Path(cache)
    seen = _read_cache(cache)
    rows = list(
        zip(graded["problem_id"], graded["sample_idx"], graded["completion"], graded["gold"], strict=True)
    )
    keys = [_key(pid, idx, text, target.model) for pid, idx, text, _ in rows]
    todo = [i for i, key in enumerate(keys) if key not in seen]
    if todo:
        check(target)
        _ask_all(target, [rows[i] for i in todo], [keys[i] for i in todo], questions, cache, seen)
    return pd.Series([seen[key] for key in keys], index=graded.index, name="judge_correct")


def _ask_all(
    target: Endpoint,
    rows: list[tuple],
    keys: list[tuple[str, int, str, str]],
    questions: Mapping[str, str],
    cache: Path,
    seen: dict,
) -> None:
    """Ask for every row through `endpoint.imap`'s pool; each verdict is appended to the cache as it comes, so an
    interrupt or a lasting failure keeps every verdict that did come."""
    cache.parent.mkdir(parents=True, exist_ok=True)

    def one(job: tuple[tuple, tuple], stop: threading.Event) -> tuple[bool | None, str]:
        (pid, _, text, gold), _ = job
        return ask(questions[pid], text, str(gold), target, stop)

    unparsed = 0
    with open(cache, "a", encoding="utf-8") as out:
        jobs = zip(rows, keys, strict=True)
        for (_, key), (verdict, reply) in api.imap(jobs, one, target.concurrency, "judge", len(rows)):
            unparsed += verdict is None
            seen[key] = bool(verdict)
            record = {
                **dict(zip(CACHE_KEYS, key, strict=True)),
                "judge_correct": bool(verdict),
                "reply": reply[:40],
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
    if unparsed:
        log.warning(
            "judge: %d of %d replies were neither YES nor NO; counted as wrong (see %s)",
            unparsed,
            len(rows),
            cache,
        )
