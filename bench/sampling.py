"""Sampling throughput on the CPU: `helpers.sampling.sample` against a naive `generate` loop.

Run: `.venv/bin/python bench/sampling.py` (about 10 minutes on 2 cores). Both sides draw k=4 samples for the
same 8 GSM8K problems (the easiest by step count) from `smollm2-135m` at T=0.7 with the same max tokens.
The naive side makes one `generate` call per sample and never stops at the answer line. The last line is
`ratio: X`, completions per second of ours over naive (goal on 2 cores: >= 6).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from helpers import data, models, sampling

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


def ours(model, tokenizer, problems) -> tuple[int, int, float]:
    """(completions, generated tokens, seconds) for helpers.sampling.sample."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        frame = sampling.sample(
            (model, tokenizer),
            problems,
            k=K,
            temperature=TEMPERATURE,
            max_new_tokens=MAX_NEW_TOKENS,
            seed=SEED,
            out_path=Path(tmp) / "bench.jsonl",
        )
        return len(frame), int(frame["n_tokens"].sum()), time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    model.eval()
    problems = data.select(data.load_gsm8k("train"), N_PROBLEMS, seed=SEED, easiest_first=True)
    results = {
        "ours": ours(model, tokenizer, problems),
        "naive": naive(model, tokenizer, problems["question"]),
    }
    for name, (count, tokens, seconds) in results.items():
        print(
            f"{name:>5}: {count} completions, {tokens} tokens in {seconds:.1f} s: "
            f"{count / seconds:.3f} completions/s, {tokens / seconds:.1f} tok/s"
        )
    (c_ours, _, s_ours), (c_naive, _, s_naive) = results["ours"], results["naive"]
    print(f"ratio: {(c_ours / s_ours) / (c_naive / s_naive):.2f}")


if __name__ == "__main__":
    main()
