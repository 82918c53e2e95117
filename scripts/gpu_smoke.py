"""GPU smoke of the Unsloth path: load, LoRA, vLLM sampling, one SFT step, save, reload, sample again.

Run on a CUDA machine with requirements-gpu.txt installed:
    python scripts/gpu_smoke.py --model unsloth/Llama-3.2-1B-Instruct --out /tmp/gpu_smoke
`--model` may be a local checkpoint directory (machines without internet). Prints each step's wall time.
Without CUDA it stops at once with a message: the CPU path is covered by `make test`.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import datasets
import torch

from helpers import data, models, sampling


@contextmanager
def timed(step: str):
    start = time.perf_counter()
    yield
    print(f"{step}: {time.perf_counter() - start:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=models.SEED_MODEL, help="hub id or local checkpoint directory")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_smoke"), help="run directory to write")
    parser.add_argument("--problems", type=int, default=4, help="GSM8K train problems to sample")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_smoke needs a CUDA GPU (none found). On CPU, run `make test` instead.")
    from trl import SFTConfig, SFTTrainer

    problems = data.select(data.load_gsm8k("train"), args.problems, seed=0, easiest_first=True)
    settings = {"k": 2, "temperature": 0.8, "max_new_tokens": 256, "seed": 0}
    with timed("load (unsloth + vLLM)"):
        model, tokenizer = models.load_model(args.model, backend="unsloth", max_lora_rank=16)
    with timed("add LoRA"):
        model = models.add_lora(model, r=16, alpha=16)
    with timed("sample base (vLLM)"):
        before = sampling.sample((model, tokenizer), problems, out_path=args.out / "base.jsonl", **settings)
    print(before[["problem_id", "finish_reason", "n_tokens", "lenient_correct"]].to_string())
    rows = [
        {"prompt": data.build_messages(q), "completion": [{"role": "assistant", "content": a}]}
        for q, a in zip(problems["question"], problems["answer"], strict=True)
    ]
    config = SFTConfig(
        output_dir=str(args.out / "trainer"), max_steps=1, per_device_train_batch_size=2, report_to="none"
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer
    )
    with timed("one SFT step"):
        trainer.train()
    manifest = {"base_model": model.gsm8k_base, "parent": "base", "steps": 1}
    with timed("save adapter"):
        target = models.save_variant(model, tokenizer, args.out, "GPU_SMOKE", manifest)
    del model, trainer
    torch.cuda.empty_cache()
    with timed("reload with adapter"):
        model, tokenizer = models.load_model(args.model, adapter=target, backend="unsloth", max_lora_rank=16)
    with timed("sample adapter (vLLM + LoRARequest)"):
        after = sampling.sample((model, tokenizer), problems, out_path=args.out / "adapter.jsonl", **settings)
    print(after[["problem_id", "finish_reason", "n_tokens", "lenient_correct"]].to_string())
    print("gpu smoke: ok")


if __name__ == "__main__":
    main()
