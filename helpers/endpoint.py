"""An OpenAI-compatible endpoint named by the environment, asked through a bounded pool with retries.

Shared by the LLM judge (`judge`, variables `JUDGE_*`) and an endpoint teacher (`distillation`, `TEACHER_*`):
`<PREFIX>_BASE_URL`, `<PREFIX>_MODEL`, the key in `<PREFIX>_API_KEY` (none for a local server),
`<PREFIX>_CONCURRENCY` requests in flight and `<PREFIX>_TIMEOUT` seconds per request. Secrets come from the
environment only, never from a notebook parameter. 429, 5xx, time-outs and cut replies are retried with
exponential backoff and jitter (or the server's Retry-After); the endpoint and model are checked before the
first request.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8  # requests in flight: a hosted API's usual per-key limit; a local vLLM takes more
DEFAULT_TIMEOUT = 60.0  # seconds for one request
RETRIES = 6  # attempts after the first, for 429, 5xx and time-outs
BACKOFF_S = (
    1.0  # first wait; doubled per attempt, with jitter, at most BACKOFF_MAX_S (or what Retry-After asks)
)
BACKOFF_MAX_S = 60.0
IN_FLIGHT_PER_WORKER = 4  # jobs handed to the pool per worker at a time
RETRY_AFTER_MAX_S = 300.0  # a longer Retry-After (a daily quota) stops the run instead of sleeping through it
# What one request can raise: URLError/HTTPError, time-outs, resets and SSL errors (all OSError), a cut reply.
REQUEST_ERRORS = (OSError, HTTPException)
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint cannot answer: one line naming the cause and the fix. What was already written is kept."""


@dataclass(frozen=True)
class Endpoint:
    """Where an endpoint is and how hard to press it, read from the environment under `prefix`."""

    url: str
    model: str
    key: str | None = field(repr=False)  # never printed
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    prefix: str = "JUDGE"
    role: str = "LLM judge"

    @property
    def host(self) -> str:
        """Host and port only: never the path, query or credentials of the URL."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def env_names(prefix: str) -> dict[str, str]:
    """The environment variables of one endpoint: url, model, key, concurrency, timeout."""
    return {
        "url": f"{prefix}_BASE_URL",
        "model": f"{prefix}_MODEL",
        "key": f"{prefix}_API_KEY",
        "concurrency": f"{prefix}_CONCURRENCY",
        "timeout": f"{prefix}_TIMEOUT",
    }


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


def from_env(prefix: str, role: str) -> Endpoint | None:
    """The endpoint `<prefix>_*` names, or None when its URL or model is unset."""
    names = env_names(prefix)
    url, model = os.environ.get(names["url"]), os.environ.get(names["model"])
    if not (url and model):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        raise ValueError(
            f"{names['url']} must be an http(s) URL without credentials, such as http://127.0.0.1:8000/v1 (a key "
            f"goes in {names['key']}); it is not one."
        )
    return Endpoint(
        url=url.rstrip("/"),
        model=model,
        key=os.environ.get(names["key"]) or None,
        concurrency=_positive(names["concurrency"], DEFAULT_CONCURRENCY, int),
        timeout=_positive(names["timeout"], DEFAULT_TIMEOUT, float),
        prefix=prefix,
        role=role,
    )


def call(target: Endpoint, path: str, body: dict | None = None) -> dict:
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


def request(
    target: Endpoint, path: str, body: dict | None = None, stop: threading.Event | None = None
) -> tuple[dict, int]:
    """(`call`'s reply, the requests it took): asked again after a transient failure with exponential backoff
    (or the server's Retry-After), unless `stop` is set (another request of the run has failed for good). The
    error raised carries `attempts`."""
    for attempt in range(1, RETRIES + 2):
        try:
            return call(target, path, body), attempt
        except REQUEST_ERRORS as err:
            err.attempts = attempt
            if attempt > RETRIES or not _transient(err) or (stop is not None and stop.is_set()):
                raise
            asked = _retry_after(err) if isinstance(err, urllib.error.HTTPError) else None
            if asked is not None and asked > RETRY_AFTER_MAX_S:
                raise  # a quota that comes back in hours: better to stop now and resume later
            wait_s = asked if asked is not None else min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (attempt - 1))
            log.debug("%s: %s, attempt %d, waiting %.1f s", target.role, err, attempt, wait_s)
            # jitter: a pool of workers must not retry in step; a stop ends the wait at once
            if (stop or threading.Event()).wait(wait_s * (1 + 0.25 * random.random())):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def call_with_retry(
    target: Endpoint, path: str, body: dict | None = None, stop: threading.Event | None = None
) -> dict:
    """`request`'s reply alone."""
    return request(target, path, body, stop)[0]


def describe(err: Exception, target: Endpoint) -> str:
    """A failed request in a few words, naming the fix where there is one."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code in (401, 403):
            return f"HTTP {err.code}: the key was refused; check {env_names(target.prefix)['key']}"
        retry = _retry_after(err)
        if err.code == 429 and retry is not None and retry > RETRY_AFTER_MAX_S:
            return f"HTTP 429: the server asks to wait {retry:.0f} s (a quota); rerun after that"
        return f"HTTP {err.code} {err.reason}{_said(err)}"
    reason = getattr(err, "reason", err)
    return f"{type(reason).__name__}: {reason}"


def _said(err: urllib.error.HTTPError) -> str:
    """What the server said with its error (`: ` and the first 200 characters on one line), or nothing: a 400
    for a setting the model refuses names the setting there."""
    try:
        body = err.read().decode("utf-8", errors="replace") if err.fp is not None else ""
    except (OSError, HTTPException):
        return ""
    text = " ".join(body.split())[:200]
    return f": {text}" if text else ""


def failed(err: Exception, target: Endpoint) -> EndpointError:
    """The error for a request that failed for good: its attempts, the cause, and that a rerun resumes."""
    tries = getattr(err, "attempts", 1)
    return EndpointError(
        f"The {target.role} at {target.host} failed after {tries} attempt{'s' * (tries > 1)} "
        f"({describe(err, target)}); rerun to resume: what was already written is kept."
    )


def not_chat(err: Exception, target: Endpoint) -> EndpointError:
    """The error for a reply that is not a chat completion (`err`: what reading it raised)."""
    return EndpointError(
        f"The {target.role} at {target.host} sent a reply that is not a chat completion ({type(err).__name__}: "
        f"{err}); is {env_names(target.prefix)['url']} an OpenAI-compatible /v1 endpoint?"
    )


def chat(target: Endpoint, body: dict, stop: threading.Event | None = None) -> tuple[dict, dict, int]:
    """A chat completion with retries: (its first choice, the whole reply, the requests it took). A request that
    fails for good raises `failed`'s error, a reply without `choices[0].message` `not_chat`'s."""
    try:
        reply, requests = request(target, "/chat/completions", body, stop)
        choice = reply["choices"][0]
        if not isinstance(choice["message"], dict):
            raise TypeError(f"message is {type(choice['message']).__name__}, not an object")
    except REQUEST_ERRORS as err:
        raise failed(err, target) from None
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
        raise not_chat(err, target) from None
    return choice, reply, requests


def served_models(target: Endpoint, retry: bool = False) -> list[str]:
    """The model names the endpoint's `/models` lists; without `retry`, one request (a quick look)."""
    listing = call_with_retry(target, "/models") if retry else call(target, "/models")
    return [str(m.get("id")) for m in listing.get("data", []) if isinstance(m, dict)]


def check(target: Endpoint, skip_hint: str) -> None:
    """Before the first request: the endpoint answers and serves the model, or one `EndpointError` line says why.
    `skip_hint`: how to do without this endpoint, for the message."""
    names = env_names(target.prefix)
    try:
        served = served_models(target, retry=True)
    except (*REQUEST_ERRORS, json.JSONDecodeError) as err:
        if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403):
            raise EndpointError(
                f"{target.role} at {target.host} refused the key ({describe(err, target)})."
            ) from None
        raise EndpointError(
            f"{target.role} unreachable at {target.host} ({describe(err, target)}): start the server or fix "
            f"{names['url']} (an OpenAI-compatible base URL ending in /v1), or {skip_hint}."
        ) from None
    if target.model not in served:
        raise EndpointError(
            f"{target.role} at {target.host} does not serve {names['model']}={target.model!r}; it serves: "
            f"{', '.join(served) or 'nothing'}."
        )


def imap(
    jobs: Iterable[Any],
    ask: Callable[[Any, threading.Event], Any],
    concurrency: int,
    desc: str,
    total: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(job, `ask(job, stop)`) for every job, in the order they finish, through a pool of `concurrency` threads.

    At most `IN_FLIGHT_PER_WORKER` jobs per worker are handed to the pool at a time, so 74,000 jobs never sit in
    memory as futures at once. On a lasting failure or an interrupt the queued jobs are dropped, `stop` is set
    (running ones stop retrying), the results that did come are still yielded, then the error goes up. Closing
    the iterator early stops the pool the same way.
    """
    work = iter(jobs)
    stop = threading.Event()
    pending: dict[Future, Any] = {}
    with (
        ThreadPoolExecutor(concurrency, thread_name_prefix=desc) as pool,
        tqdm(total=total, desc=desc, mininterval=10) as bar,
    ):
        try:
            while True:
                for job in itertools.islice(work, concurrency * IN_FLIGHT_PER_WORKER - len(pending)):
                    pending[pool.submit(ask, job, stop)] = job
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                error = None
                for future in done:
                    job = pending.pop(future)
                    if future.exception() is not None:
                        error = error or future.exception()
                        continue
                    bar.update(1)
                    yield job, future.result()
                if error is not None:
                    raise error
        except GeneratorExit:
            _stop(stop, pending)
            raise
        except BaseException:
            _stop(stop, pending)
            for future in wait(pending)[0]:
                if not future.cancelled() and future.exception() is None:
                    yield pending[future], future.result()
            raise


def _stop(stop: threading.Event, pending: dict[Future, Any]) -> None:
    stop.set()
    for future in pending:
        future.cancel()
