"""Notebook 07: the original study's advice to the GPU-poor, SFT on verified answers from a stronger source.

Two data sets for SFT of the base, in the same row format as `filtering`'s:
- `SFT_gold`: the data set's own worked solutions, one per training problem (`gold_solution`).
- `SFT_teacher`: a teacher sampled k times per training problem (`sample_teacher`), the answers the run's filter
  checker verifies kept, at most `max_per_problem` distinct ones per problem (`teacher_rows`).

The teacher (`RunConfig.teacher`) is a model `models` loads, sampled through the series' engine with the run's
prompt and settings and its own seed (`TEACHER_SEED_OFFSET`: never the base's draws), or `"endpoint"`: the
OpenAI-compatible endpoint `TEACHER_BASE_URL` / `TEACHER_MODEL` (key in `TEACHER_API_KEY`, pressed with
`TEACHER_CONCURRENCY`, `TEACHER_TIMEOUT`) asked through `endpoint`'s pool and retries, as the judge is. Either way
the samples go to `samples/teacher_train.jsonl`, the resumable store of `sampling`.

The thinking rule. A reasoning teacher thinks before it answers: in a separate field of the reply
(`reasoning_content`, or `reasoning`) or inside `<think>...</think>` in the text. The thinking is always split
off, kept in the sample's `thinking` field, and never graded: the checker reads the answer after it, and a reply
cut off before its thinking ended has no answer. The SFT row holds what the student should write: with
`teacher_thinking="strip"` (the default) the answer alone, which for the prompt's "step by step ... #### <number>"
is worked steps and the answer line; with `"keep"` the thinking, a blank line, then the answer, for students with
the token budget to think as long (the trainer cuts rows longer than `max_seq_length` from the end, answer line
included: raise it with "keep").

A reasoning teacher belongs behind an endpoint (`vllm serve --reasoning-parser ...` returns its thinking apart):
the series' engine ends a sample at its first `#### <number>` line, which a model may write while still thinking.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from helpers import config, data, decoding, filtering, sampling
from helpers import endpoint as api
from helpers.files import write_jsonl
from helpers.runs import Run

GOLD_FILE = "datasets/sft_gold.jsonl"
TEACHER_SAMPLES = "samples/teacher_train.jsonl"
TEACHER_FILE = "datasets/sft_teacher.jsonl"
# The teacher draws with seed + 1: the same model as teacher never repeats the base's samples.
TEACHER_SEED_OFFSET = 1
PREFIX, ROLE = "TEACHER", "teacher"
ENDPOINT_BACKEND = "endpoint"  # the `backend` of an endpoint teacher's rows
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def gold_solution(answer: str, gold: str) -> str:
    """A data set's worked solution as the prompt asks for it: calculator annotations stripped, the final line
    `#### <gold>`.

    >>> gold_solution("Sam has 7+5 = <<7+5=12>>12 pens.\\n#### 12", "12")
    'Sam has 7+5 = 12 pens.\\n#### 12'
    """
    lines = data.CALC_RE.sub("", answer).rstrip().splitlines()
    if lines and lines[-1].lstrip().startswith("####"):
        lines = lines[:-1]
    return "\n".join([*(line.rstrip() for line in lines), f"#### {gold}"])


def gold_rows(problems: Any) -> list[dict[str, Any]]:
    """One SFT row per problem: its question as the prompt, its worked solution as the completion."""
    return [
        {
            "problem_id": pid,
            "sample_idx": 0,
            "prompt": data.build_messages(question),
            "completion": [{"role": "assistant", "content": gold_solution(answer, gold)}],
        }
        for pid, question, answer, gold in zip(
            problems["id"], problems["question"], problems["answer"], problems["gold"], strict=True
        )
    ]


def split_thinking(text: str, reasoning: str | None = None) -> tuple[str, str]:
    """(thinking, answer) of a teacher's reply: a separate reasoning field, else the text up to `</think>` (its
    `<think>` may be in the chat template), else, for a text that opens `<think>` and never closes it, all thinking
    and no answer; else no thinking.

    >>> split_thinking("<think>2+2 is 4</think>\\nSo 4.\\n#### 4")
    ('2+2 is 4', 'So 4.\\n#### 4')
    >>> split_thinking("So 4.\\n#### 4", reasoning="add them")
    ('add them', 'So 4.\\n#### 4')
    >>> split_thinking("<think>2+2 is 4, so #### 4")  # cut off while thinking
    ('2+2 is 4, so #### 4', '')
    """
    if reasoning:
        return reasoning.strip(), text.strip()
    if THINK_CLOSE in text:
        thinking, _, answer = text.partition(THINK_CLOSE)
        return thinking.replace(THINK_OPEN, "").strip(), answer.strip()
    if text.lstrip().startswith(THINK_OPEN):  # cut off while thinking: no answer yet
        return text.replace(THINK_OPEN, "").strip(), ""
    return "", text.strip()


def for_student(thinking: str, answer: str, rule: str) -> str:
    """The SFT row's text under the thinking rule (`config.THINKING`)."""
    if rule not in config.THINKING:
        raise ValueError(f"Unknown teacher_thinking {rule!r}. Choose one of: {', '.join(config.THINKING)}.")
    return f"{thinking}\n\n{answer}" if rule == "keep" and thinking else answer


def cut_answer(answer: str, finish_reason: str | None) -> tuple[str, str]:
    """(text, finish_reason) under the engines' rule: the text ends with its first `#### <number>` line."""
    found = decoding.ANSWER_LINE_RE.search(answer + "\n")
    if found is not None:
        return answer[: found.end()].rstrip("\n"), "answer"
    return answer.rstrip("\n"), "length" if finish_reason == "length" else "stop"


def describe_teacher(cfg: config.RunConfig) -> str:
    """One line naming the teacher and how it is asked (an endpoint by host, model and key source, never the key)."""
    rule = "thinking stripped" if cfg.teacher_thinking == "strip" else "thinking kept"
    draw = f"k={cfg.k}, T={cfg.temperature}, up to {cfg.teacher_max_new_tokens} tokens, {rule}"
    if cfg.teacher == config.TEACHER_ENDPOINT:
        target = teacher_endpoint()
        key = f"key from ${api.env_names(PREFIX)['key']}" if target.key else "no key"
        return f"teacher: {target.model} at {target.host} ({key}, {target.concurrency} requests at a time); {draw}"
    same = " (the base model itself: a stand-in, not a stronger source)" if cfg.teacher == cfg.model else ""
    return f"teacher: {cfg.teacher}{same}, through the series' engine with seed {cfg.seed + TEACHER_SEED_OFFSET}; {draw}"


def teacher_endpoint() -> api.Endpoint:
    """The endpoint teacher named by the environment, or a ValueError naming the variables to set."""
    target = api.from_env(PREFIX, ROLE)
    if target is None:
        names = api.env_names(PREFIX)
        raise ValueError(
            f"teacher={config.TEACHER_ENDPOINT!r} needs {names['url']} and {names['model']} in the environment (and "
            f"{names['key']} for a hosted API), e.g. a local `vllm serve` at http://127.0.0.1:8000/v1; or set "
            "teacher to a model name."
        )
    return target


def ask_teacher(
    target: api.Endpoint,
    question: str,
    cfg: config.RunConfig,
    seed: int,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """One teacher sample from the endpoint: its text (cut at the answer line), thinking, completion tokens,
    finish reason and the requests it took (retries included)."""
    body = {
        "model": target.model,
        "messages": data.build_messages(question),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.teacher_max_new_tokens,
        "seed": seed,
    }
    choice, reply, requests = api.chat(target, body, stop)
    message = choice["message"]
    try:
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        thinking, answer = split_thinking(message.get("content") or "", reasoning)
        tokens = (reply.get("usage") or {}).get("completion_tokens")
        if tokens is None:
            raise KeyError("usage.completion_tokens (the teacher's cost)")
        tokens = int(tokens)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise api.not_chat(err, target) from None
    text, reason = cut_answer(answer, choice.get("finish_reason"))
    return {
        "completion": text,
        "thinking": thinking,
        "n_tokens": tokens,
        "finish_reason": reason,
        "requests": requests,
    }


def _sample_endpoint(run: Run, problems: Any, seed: int) -> pd.DataFrame:
    cfg = run.cfg
    target = teacher_endpoint()
    settings = {
        "model": target.model,
        "backend": ENDPOINT_BACKEND,
        "dtype": "unknown",  # the endpoint does not say
        "seed": seed,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.teacher_max_new_tokens,
    }
    questions = dict(zip(problems["id"], problems["question"], strict=True))

    def one(job: tuple[str, int], stop: threading.Event) -> dict[str, Any]:
        pid, idx = job
        return ask_teacher(target, questions[pid], cfg, decoding.row_seed(seed, pid, idx), stop)

    def generate(todo: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
        api.check(target, "set teacher to a model name")
        jobs = [(pid, idx) for pid, idxs in todo.items() for idx in idxs]
        with contextlib.closing(api.imap(jobs, one, target.concurrency, "teacher", len(jobs))) as rows:
            for (pid, idx), row in rows:
                yield {"problem_id": pid, "sample_idx": idx, **row}

    return sampling.store(run.path(TEACHER_SAMPLES), problems, cfg.k, settings, generate)


def sample_teacher(run: Run) -> pd.DataFrame:
    """k teacher samples per training problem in `samples/teacher_train.jsonl` (resumable), the answers graded
    after the thinking is split off (`thinking` column)."""
    cfg = run.cfg
    problems = run.problems("train")
    seed = cfg.seed + TEACHER_SEED_OFFSET
    if cfg.teacher == config.TEACHER_ENDPOINT:
        graded = _sample_endpoint(run, problems, seed)
    else:
        # A child process, as in 01: the engine's memory (GPU) and thread pinning (CPU) end before SFT trains.
        room = cfg.max_seq_length + cfg.teacher_max_new_tokens  # the prompt and all the teacher may write
        isolated = sampling.choose_backend() != "transformers"
        graded = (sampling.sample_isolated if isolated else sampling.sample)(
            cfg.teacher,
            problems,
            k=cfg.k,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.teacher_max_new_tokens,
            seed=seed,
            out_path=run.path(TEACHER_SAMPLES),
            load_in_4bit=cfg.load_in_4bit,
            max_seq_length=room,
        )
    return regrade(graded, problems)


def regrade(graded: pd.DataFrame, problems: Any) -> pd.DataFrame:
    """Teacher samples graded on their answers: thinking split off into `thinking` (kept when the store has it)."""
    stored = graded["thinking"] if "thinking" in graded else pd.Series("", index=graded.index)
    parts = [
        split_thinking(text, thought) for text, thought in zip(graded["completion"], stored, strict=True)
    ]
    samples = graded[[c for c in graded.columns if c in (*sampling.ROW_FIELDS, "requests")]]
    samples = samples.assign(completion=[answer for _, answer in parts], thinking=[t for t, _ in parts])
    golds = dict(zip(problems["id"], problems["gold"], strict=True))
    return sampling.grade_samples(samples, golds)


def teacher_rows(
    graded: pd.DataFrame, questions: dict[str, str], cfg: config.RunConfig
) -> list[dict[str, Any]]:
    """The verified teacher answers as SFT rows (the run's filter checker, `max_per_problem` distinct per problem),
    each row's text under the thinking rule."""
    rows = filtering.build_sft_rows(graded, questions, cfg.filter_checker, cfg.max_per_problem)
    thinking = {
        (p, int(i)): t
        for p, i, t in zip(graded["problem_id"], graded["sample_idx"], graded["thinking"], strict=True)
    }
    for row in rows:
        answer = row["completion"][0]["content"]
        row["completion"][0]["content"] = for_student(
            thinking[(row["problem_id"], row["sample_idx"])], answer, cfg.teacher_thinking
        )
    return rows


def build(run: Run, graded: pd.DataFrame) -> pd.DataFrame:
    """Write `datasets/sft_gold.jsonl` and `datasets/sft_teacher.jsonl`; one row per data set: rows, problems.

    An empty teacher set is an error naming the cause (no verified answer) and what to try; the gold set is written
    before it.
    """
    problems = run.problems("train")
    gold = gold_rows(problems)
    write_jsonl(run.path(GOLD_FILE), gold)
    teacher = teacher_rows(graded, run.questions("train"), run.cfg)
    if not teacher:
        raise filtering.NothingToTrainOn(
            f"The teacher ({run.cfg.teacher}) answered none of {len(problems)} training problems correctly under the "
            f"{run.cfg.filter_checker} checker: nothing to train SFT_teacher on. Look at {TEACHER_SAMPLES} "
            "(a cut-off answer? raise teacher_max_new_tokens), or pick a stronger teacher."
        )
    write_jsonl(run.path(TEACHER_FILE), teacher)
    return pd.DataFrame(
        [
            {"data set": GOLD_FILE, "rows": len(gold), "problems": len({r["problem_id"] for r in gold})},
            {
                "data set": TEACHER_FILE,
                "rows": len(teacher),
                "problems": len({r["problem_id"] for r in teacher}),
            },
        ]
    ).set_index("data set")
