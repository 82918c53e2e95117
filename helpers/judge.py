"""An optional checker: an LLM judge behind an OpenAI-compatible endpoint, off unless configured.

The endpoint comes from the environment only (`JUDGE_BASE_URL`, `JUDGE_MODEL`, key in `JUDGE_API_KEY`, none for
a local server), never from a notebook parameter, so no secret lands in an executed notebook. Built for the full
run's ~74,000 questions: a bounded pool of concurrent requests (`JUDGE_CONCURRENCY`), retries with backoff on
429, 5xx and time-outs, a check of the endpoint and model before the first question, and a JSONL cache of
verdicts per sample that an interrupted run resumes from. Starting a local judge server is `judge_server`'s job.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from helpers.files import read_jsonl, repair_tail

log = logging.getLogger(__name__)

ENV_URL, ENV_MODEL, ENV_KEY = "JUDGE_BASE_URL", "JUDGE_MODEL", "JUDGE_API_KEY"
ENV_CONCURRENCY, ENV_TIMEOUT = "JUDGE_CONCURRENCY", "JUDGE_TIMEOUT"
DEFAULT_CONCURRENCY = 8  # requests in flight: a hosted API's usual per-key limit; a local vLLM takes more
DEFAULT_TIMEOUT = 60.0  # seconds for one request
RETRIES = 6  # attempts after the first, for 429, 5xx and time-outs
BACKOFF_S = (
    1.0  # first wait; doubled per attempt, with jitter, at most BACKOFF_MAX_S (or what Retry-After asks)
)
BACKOFF_MAX_S = 60.0
IN_FLIGHT_PER_WORKER = 4  # questions handed to the pool per worker at a time
RETRY_AFTER_MAX_S = 300.0  # a longer Retry-After (a daily quota) stops the run instead of sleeping through it
# What one request can raise: URLError/HTTPError, time-outs, resets and SSL errors (all OSError), a cut reply.
REQUEST_ERRORS = (OSError, HTTPException)
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PROMPT = (
    "You grade answers to grade-school maths problems.\n\nProblem:\n{question}\n\nReference answer: {gold}\n\n"
    "Student's response:\n{completion}\n\nIs the student's final answer equal to the reference answer? "
    "Ignore the working and the formatting. Reply with exactly one word: YES or NO."
)
CACHE_KEYS = ("problem_id", "sample_idx", "completion_sha", "model")


class JudgeError(RuntimeError):
    """The judge cannot answer: one line naming the cause and the fix. Cached verdicts are kept."""


@dataclass(frozen=True)
class Endpoint:
    """Where the judge is and how hard to press it, read from the environment."""

    url: str
    model: str
    key: str | None
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT

    @property
    def host(self) -> str:
        """Host and port only: never the path, query or credentials of the URL."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _positive(name: str, default: float, kind: Callable[[str], float]) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"{name}={raw!r} is not a positive {kind.__name__}: set it to e.g. {default} or unset it."
        )
    return value


def endpoint() -> Endpoint | None:
    """The configured endpoint, or None when `JUDGE_BASE_URL` or `JUDGE_MODEL` is unset."""
    url, model = os.environ.get(ENV_URL), os.environ.get(ENV_MODEL)
    if not (url and model):
        return None
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{ENV_URL} must be an http(s) URL such as http://127.0.0.1:8000/v1, not {url!r}.")
    return Endpoint(
        url=url.rstrip("/"),
        model=model,
        key=os.environ.get(ENV_KEY) or None,
        concurrency=_positive(ENV_CONCURRENCY, DEFAULT_CONCURRENCY, int),
        timeout=_positive(ENV_TIMEOUT, DEFAULT_TIMEOUT, float),
    )


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


def _call(target: Endpoint, path: str, body: dict | None = None) -> dict:
    """One HTTP request to the endpoint: the decoded JSON reply, or urllib's error."""
    headers = {"Content-Type": "application/json"}
    if target.key:
        headers["Authorization"] = f"Bearer {target.key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(target.url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=target.timeout) as response:
        return json.loads(response.read())


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    """The server's Retry-After in seconds (never below 0), or None when it sent none we can read."""
    try:
        return max(0.0, float(err.headers.get("Retry-After", "")))
    except (TypeError, ValueError):
        return None


def _transient(err: Exception) -> bool:
    """429, 5xx, a time-out or a dropped or cut connection: worth asking again (a refused connection is not)."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code in RETRY_STATUS
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return isinstance(reason, TimeoutError | ConnectionResetError | ConnectionAbortedError | HTTPException)


def call_with_retry(
    target: Endpoint, path: str, body: dict | None = None, stop: threading.Event | None = None
) -> dict:
    """`_call`, asked again after a transient failure with exponential backoff (or the server's Retry-After),
    unless `stop` is set (another request of the run has failed for good). The error raised carries `attempts`."""
    for attempt in range(1, RETRIES + 2):
        try:
            return _call(target, path, body)
        except REQUEST_ERRORS as err:
            err.attempts = attempt
            if attempt > RETRIES or not _transient(err) or (stop is not None and stop.is_set()):
                raise
            asked = _retry_after(err) if isinstance(err, urllib.error.HTTPError) else None
            if asked is not None and asked > RETRY_AFTER_MAX_S:
                raise  # a quota that comes back in hours: better to stop now and resume later
            wait_s = asked if asked is not None else min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))
            log.debug("judge: %s, attempt %d, waiting %.1f s", err, attempt, wait_s)
            # jitter: a pool of workers must not retry in step; a stop ends the wait at once
            if (stop or threading.Event()).wait(wait_s * (1 + 0.25 * random.random())):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _describe(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        if err.code in (401, 403):
            return f"HTTP {err.code}: the key was refused; check {ENV_KEY}"
        retry = _retry_after(err)
        if err.code == 429 and retry is not None and retry > RETRY_AFTER_MAX_S:
            return f"HTTP 429: the server asks to wait {retry:.0f} s (a quota); rerun after that"
        return f"HTTP {err.code} {err.reason}"
    reason = getattr(err, "reason", err)
    return f"{type(reason).__name__}: {reason}"


def served_models(target: Endpoint, retry: bool = False) -> list[str]:
    """The model names the endpoint's `/models` lists; without `retry`, one request (a quick look)."""
    listing = call_with_retry(target, "/models") if retry else _call(target, "/models")
    return [str(m.get("id")) for m in listing.get("data", []) if isinstance(m, dict)]


def check(target: Endpoint) -> None:
    """Before the first question: the endpoint answers and serves the model, or one `JudgeError` line says why."""
    try:
        served = served_models(target, retry=True)
    except (*REQUEST_ERRORS, json.JSONDecodeError) as err:
        if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403):
            raise JudgeError(f"LLM judge at {target.host} refused the key ({_describe(err)}).") from None
        raise JudgeError(
            f"LLM judge unreachable at {target.host} ({_describe(err)}): start the server or fix "
            f"{ENV_URL} (an OpenAI-compatible base URL ending in /v1), or unset it to skip the judge."
        ) from None
    if target.model not in served:
        raise JudgeError(
            f"LLM judge at {target.host} does not serve {ENV_MODEL}={target.model!r}; it serves: "
            f"{', '.join(served) or 'nothing'}."
        )


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
    try:
        reply = (
            call_with_retry(target, "/chat/completions", body, stop)["choices"][0]["message"]["content"] or ""
        )
    except REQUEST_ERRORS as err:
        tries = getattr(err, "attempts", 1)
        raise JudgeError(
            f"The LLM judge at {target.host} failed after {tries} attempt{'s' * (tries > 1)} ({_describe(err)}); "
            "rerun to resume: verdicts already cached are kept."
        ) from None
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
        raise JudgeError(
            f"The LLM judge at {target.host} sent a reply that is not a chat completion ({type(err).__name__}: "
            f"{err}); is {ENV_URL} an OpenAI-compatible /v1 endpoint?"
        ) from None
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
    """Ask for every row through a pool of `target.concurrency` workers; each verdict is appended as it comes.

    At most `IN_FLIGHT_PER_WORKER` questions per worker are handed to the pool at a time, so 74,000 questions
    never sit in memory as futures at once. On a lasting failure or an interrupt the queued questions are
    dropped, the running ones stop retrying, and every verdict that did come is written before the error goes up.
    """
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = iter(zip(rows, keys, strict=True))
    stop = threading.Event()
    pending: dict[Future, tuple] = {}
    unparsed = 0
    with (
        open(cache, "a", encoding="utf-8") as out,
        ThreadPoolExecutor(target.concurrency, thread_name_prefix="judge") as pool,
        tqdm(total=len(rows), desc="judge", mininterval=10) as bar,
    ):
        try:
            while True:
                for (pid, _, text, gold), key in itertools.islice(
                    work, target.concurrency * IN_FLIGHT_PER_WORKER - len(pending)
                ):
                    pending[pool.submit(ask, questions[pid], text, str(gold), target, stop)] = key
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                failed, missed = _write_verdicts(done, pending, seen, out)
                unparsed += missed
                bar.update(len(done))
                if failed is not None:
                    raise failed
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            _write_verdicts(wait(pending)[0], pending, seen, out)
            raise
    if unparsed:
        log.warning(
            "judge: %d of %d replies were neither YES nor NO; counted as wrong (see %s)",
            unparsed,
            len(rows),
            cache,
        )


def _write_verdicts(
    done: set[Future], pending: dict[Future, tuple], seen: dict, out: Any
) -> tuple[BaseException | None, int]:
    """Append the verdicts of the `done` futures (taken out of `pending`) to the cache: (the first failure among
    them or None, how many replies were neither YES nor NO)."""
    failed, unparsed = None, 0
    for future in done:
        key = pending.pop(future)
        if future.cancelled():
            continue
        if future.exception() is not None:
            failed = failed or future.exception()
            continue
        verdict, reply = future.result()
        unparsed += verdict is None
        seen[key] = bool(verdict)
        record = {
            **dict(zip(CACHE_KEYS, key, strict=True)),
            "judge_correct": bool(verdict),
            "reply": reply[:40],
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
    return failed, unparsed
