"""An optional third checker: an LLM judge behind an OpenAI-compatible endpoint, off unless configured.

The endpoint comes from the environment only (`JUDGE_BASE_URL`, `JUDGE_MODEL`, key in `JUDGE_API_KEY`), never
from a notebook parameter, so no secret lands in an executed notebook. Verdicts are cached per sample in a
JSONL file, so an interrupted judging run resumes and a rerun costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from helpers.files import read_jsonl, repair_tail

ENV_URL, ENV_MODEL, ENV_KEY = "JUDGE_BASE_URL", "JUDGE_MODEL", "JUDGE_API_KEY"
PROMPT = (
    "You grade answers to grade-school maths problems.\n\nProblem:\n{question}\n\nReference answer: {gold}\n\n"
    "Student's response:\n{completion}\n\nIs the student's final answer equal to the reference answer? "
    "Ignore the working and the formatting. Reply with exactly one word: YES or NO."
)


def configured() -> bool:
    """True when `JUDGE_BASE_URL` and `JUDGE_MODEL` are set."""
    return bool(os.environ.get(ENV_URL) and os.environ.get(ENV_MODEL))


def status() -> str:
    """One line for the notebook: which endpoint judges, or why the judge is skipped."""
    if configured():
        host = urllib.parse.urlsplit(os.environ[ENV_URL]).hostname  # never the path, query or credentials
        return f"LLM judge: {os.environ[ENV_MODEL]} at {host} (key from ${ENV_KEY})"
    return (
        f"LLM judge skipped: set {ENV_URL} and {ENV_MODEL} (and {ENV_KEY}) in the environment to enable it."
    )


def ask(question: str, completion: str, gold: str, timeout: float = 60.0) -> bool:
    """The judge's verdict on one completion: does its final answer equal `gold`?"""
    if not configured():
        raise RuntimeError(status())
    body = {
        "model": os.environ[ENV_MODEL],
        "messages": [
            {"role": "user", "content": PROMPT.format(question=question, gold=gold, completion=completion)}
        ],
        "temperature": 0,
        "max_tokens": 3,
    }
    request = urllib.request.Request(
        os.environ[ENV_URL].rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ.get(ENV_KEY, '')}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())["choices"][0]["message"]["content"]
    except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as err:
        raise RuntimeError(
            f"The LLM judge did not answer ({type(err).__name__}: {err}). Check {ENV_URL} (an OpenAI-compatible "
            f"base URL ending in /v1), {ENV_MODEL} and {ENV_KEY}, or unset them to skip the judge; verdicts already "
            "cached are kept."
        ) from err
    return reply.strip().upper().startswith("YES")


def _key(problem_id: str, sample_idx: int, completion: str) -> tuple[str, int, str, str]:
    """A verdict belongs to one judge model and one completion text, not only to a sample's position."""
    digest = hashlib.sha256(completion.encode()).hexdigest()[:16]
    return problem_id, int(sample_idx), digest, os.environ.get(ENV_MODEL, "")


def _read_cache(cache: Path) -> dict[tuple[str, int, str, str], bool]:
    """Cached verdicts, after cutting off a partial last line (a run killed mid-write: that one is asked again)."""
    repair_tail(cache)
    rows = read_jsonl(cache) if cache.exists() else []
    keys = ("problem_id", "sample_idx", "completion_sha", "model")
    return {tuple(row[k] for k in keys): row["judge_correct"] for row in rows}


def judge_samples(graded: pd.DataFrame, questions: Mapping[str, str], cache: str | os.PathLike) -> pd.Series:
    """`judge_correct` for every graded sample, asking only for samples not already in the `cache` JSONL."""
    cache = Path(cache)
    seen = _read_cache(cache)
    rows = list(
        zip(graded["problem_id"], graded["sample_idx"], graded["completion"], graded["gold"], strict=True)
    )
    keys = [_key(pid, idx, text) for pid, idx, text, _ in rows]
    todo = [i for i, key in enumerate(keys) if key not in seen]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a", encoding="utf-8") as out:
        for i in tqdm(todo, desc="judge", disable=not todo):
            pid, idx, text, gold = rows[i]
            verdict = ask(questions[pid], text, str(gold))
            seen[keys[i]] = verdict
            record = dict(zip(("problem_id", "sample_idx", "completion_sha", "model"), keys[i], strict=True))
            out.write(json.dumps({**record, "judge_correct": verdict}) + "\n")
            out.flush()
    return pd.Series([seen[key] for key in keys], index=graded.index, name="judge_correct")
