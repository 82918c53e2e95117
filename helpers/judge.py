"""An optional third checker: an LLM judge behind an OpenAI-compatible endpoint, off unless configured.

The endpoint comes from the environment only (`JUDGE_BASE_URL`, `JUDGE_MODEL`, key in `JUDGE_API_KEY`), never
from a notebook parameter, so no secret lands in an executed notebook. Verdicts are cached per sample in a
JSONL file, so an interrupted judging run resumes and a rerun costs nothing.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

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
        return f"LLM judge: {os.environ[ENV_MODEL]} at {os.environ[ENV_URL]} (key from ${ENV_KEY})"
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
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())["choices"][0]["message"]["content"]
    return reply.strip().upper().startswith("YES")


def judge_samples(graded: pd.DataFrame, questions: Mapping[str, str], cache: str | os.PathLike) -> pd.Series:
    """`judge_correct` for every graded sample, asking only for samples not already in the `cache` JSONL."""
    cache = Path(cache)
    seen = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                seen[(row["problem_id"], row["sample_idx"])] = row["judge_correct"]
    keys = list(zip(graded["problem_id"], graded["sample_idx"].astype(int), strict=True))
    todo = [i for i, key in enumerate(keys) if key not in seen]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "a", encoding="utf-8") as out:
        for i in tqdm(todo, desc="judge", disable=not todo):
            row = graded.iloc[i]
            verdict = ask(questions[row["problem_id"]], row["completion"], str(row["gold"]))
            seen[keys[i]] = verdict
            out.write(
                json.dumps({"problem_id": keys[i][0], "sample_idx": keys[i][1], "judge_correct": verdict})
                + "\n"
            )
            out.flush()
    return pd.Series([seen[key] for key in keys], index=graded.index, name="judge_correct")
