"""First-run check of the GPU path: one model, one vLLM engine, every call the series makes, a verdict per check.

On a CUDA machine with the GPU set installed (docs/gpu.md):
    python scripts/gpu_smoke.py --out outputs/gpu_smoke            # the original study's model, from the hub
    python scripts/gpu_smoke.py --model /path/to/Llama-3.2-1B-Instruct   # a local checkpoint
Checks, each printed as one `PASS|FAIL|SKIP <check>: <detail>` line: load (Unsloth + vLLM, precision), LoRA,
one sampling call, the cost of per-sample seeds, one SFT step, one GRPO step (generating through vLLM), one
ORPO step, save, and reload through the same engine as a LoRA request. One engine per process: vLLM will not
start a second beside the first (an engine needs its share of the card free at start-up: vllm 0.32.0,
vllm/v1/worker/utils.py, about lines 724-750). Settings come from the `gpu-smoke` profile.
`--cpu` runs the same checks on the CPU path (the CPU model, transformers + peft; CI does this).
Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import accelerator, config, data, models, runs, sampling, trainer_config, training

CPU_PROFILE, GPU_PROFILE = "smoke", "gpu-smoke"


class Checks:
    """Runs named checks in order; a check whose prerequisite failed is skipped, not run."""

    def __init__(self) -> None:
        self.results: dict[str, str] = {}

    def run(self, name: str, check: Callable[[], str], needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if self.results.get(n) != "PASS"]
        if missing:
            self._say("SKIP", name, f"needs {', '.join(missing)}")
            return
        start = time.perf_counter()
        try:
            detail = check()
        except Exception as err:  # a verdict per check: report it and go on to the independent ones
            traceback.print_exc(file=sys.stderr)
            self._say("FAIL", name, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return
        self._say("PASS", name, f"{detail} ({time.perf_counter() - start:.1f} s)")

    def _say(self, verdict: str, name: str, detail: str) -> None:
        self.results[name] = verdict
        print(f"{verdict} {name}: {detail}", flush=True)

    def verdict(self) -> int:
        failed = [n for n, v in self.results.items() if v != "PASS"]
        print(f"verdict: {len(self.results) - len(failed)} of {len(self.results)} checks passed"
              + (f"; not passed: {', '.join(failed)}" if failed else ""))  # fmt: skip
        return 1 if failed else 0


def toy_rows(problems: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """SFT rows (the reference solutions), ORPO pairs (against a wrong final number) and GRPO prompts."""
    sft, orpo, grpo = [], [], []
    for question, solution, gold in zip(
        problems["question"], problems["answer"], problems["gold"], strict=True
    ):
        prompt = data.build_messages(question)
        wrong = solution.rsplit("####", 1)[0] + f"#### {int(gold) + 1}"
        sft.append({"prompt": prompt, "completion": [{"role": "assistant", "content": solution}]})
        orpo.append(
            {
                **sft[-1],
                "chosen": sft[-1]["completion"],
                "rejected": [{"role": "assistant", "content": wrong}],
            }
        )
        grpo.append({"prompt": prompt, "answer": gold})
    return sft, orpo, grpo


def step(trainer: Any, key: str) -> str:
    trainer.train()
    logged = [entry[key] for entry in trainer.state.log_history if key in entry]
    return f"1 step, {key} {logged[-1]:.4g}" if logged else f"1 step, no {key} logged"


def seeds_cost(model: Any, tokenizer: Any, problems: Any, c: config.RunConfig) -> str:
    """Throughput of the same requests with and without per-sample seeds, measured here (vllm 0.32.0 samples each
    seeded request on its own: vllm/v1/sample/ops/topk_topp_sampler.py, about lines 573-576)."""
    from vllm import SamplingParams

    prompts = [{"prompt_token_ids": sampling.prompt_token_ids(tokenizer, data.render_prompt(tokenizer, q))}
               for q in problems["question"]] * 16  # fmt: skip

    def rate(seeded: bool) -> float:
        params = [SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                 seed=i if seeded else None) for i in range(len(prompts))]  # fmt: skip
        start = time.perf_counter()
        outs = model.fast_generate(prompts, sampling_params=params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start)

    rate(False)  # warm-up: prefix cache and kernels, so neither measured order has an advantage
    rates = {"unseeded": [], "seeded": []}
    for seeded in (True, False, False, True):
        rates["seeded" if seeded else "unseeded"].append(rate(seeded))
    return (
        ", ".join(f"{k} {sum(v) / len(v):.0f} tok/s" for k, v in rates.items())
        + f" ({len(prompts)} requests)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="hub id or local checkpoint (default: the profile's model)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_smoke"), help="directory to write")
    parser.add_argument("--cpu", action="store_true", help="run the same checks on the CPU path")
    parser.add_argument(
        "--problems", type=int, default=4, help="toy training problems to sample and train on"
    )
    args = parser.parse_args(argv)
    if args.cpu and accelerator.cuda_available():
        print("error: --cpu checks the CPU path, which a machine with CUDA does not take: run without it.",
              file=sys.stderr)  # fmt: skip
        return 2
    if not args.cpu:
        try:
            accelerator.require_gpu(
                "gpu_smoke.py"
            )  # says why (no CUDA, old driver, CPU torch) and what to do
        except accelerator.NoGPU as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    c = config.resolve(CPU_PROFILE if args.cpu else GPU_PROFILE, model=args.model)
    run = runs.Run(args.out.resolve(), c)
    problems = data.make_arithmetic(args.problems, seed=c.seed, split="train")
    sft_rows, orpo_rows, grpo_rows = toy_rows(problems)
    draw = {
        "k": 2,
        "temperature": c.temperature,
        "top_p": c.top_p,
        "max_new_tokens": c.max_new_tokens,
        "seed": c.seed,
    }
    state: dict[str, Any] = {}
    checks = Checks()

    def load() -> str:
        state["model"], state["tokenizer"] = models.load_model(
            c.model, trainable=True, max_seq_length=c.max_seq_length, max_lora_rank=c.lora_r
        )
        model = state["model"]
        engine = "vLLM engine" if hasattr(model, "vllm_engine") else "no vLLM engine"
        precision = (
            "bf16" if accelerator.bf16_supported() else "fp16" if model.gsm8k_backend == "unsloth" else "fp32"
        )
        return f"{c.model} via {model.gsm8k_backend}, {engine}, {model.dtype}, trainers in {precision}; {accelerator.memory_report()}"

    def lora() -> str:
        state["model"] = models.add_lora(state["model"], r=c.lora_r, alpha=c.lora_alpha, seed=c.seed)
        return f"r={c.lora_r}, alpha={c.lora_alpha}"

    def sample(name: str, model_ref: Any = None, adapter: Any = None) -> Callable[[], str]:
        """A check sampling `model_ref` (default: the model under test) into `<name>.jsonl`."""

        def go() -> str:
            path = args.out / f"{name}.jsonl"
            ref = model_ref or (state["model"], state["tokenizer"])
            rows = sampling.sample(ref, problems, out_path=path, adapter=adapter, **draw)
            stats = sampling.read_stats(path)
            return f"{len(rows)} samples, {rows['has_format'].mean():.0%} with the #### line, {stats['tokens_per_s']:.0f} tok/s"

        return go

    def train(build: Callable[..., Any], method: str, rows: list[dict], key: str) -> Callable[[], str]:
        def go() -> str:
            settings = getattr(trainer_config, f"{method}_config")(
                run, "GPU_SMOKE", report_to=[], max_steps=1
            )
            trainer = build(state["model"], state["tokenizer"], settings, rows)
            detail = step(trainer, key)
            if getattr(trainer.args, "use_vllm", False):
                detail += ", generating with vLLM"
            models.copy_tags(state["model"], trainer.model)  # sampling reads them off the model
            state["model"] = trainer.model
            return detail

        return go

    def save() -> str:
        manifest = {"base_model": state["model"].gsm8k_base, "parent": None, "method": "gpu_smoke"}
        state["adapter"] = models.save_variant(
            state["model"], state["tokenizer"], args.out, "GPU_SMOKE", manifest
        )
        return str(state["adapter"])

    checks.run("load", load)
    checks.run("lora", lora, ("load",))
    checks.run("sample", sample("base"), ("lora",))
    if not args.cpu:
        checks.run("seeds", lambda: seeds_cost(state["model"], state["tokenizer"], problems, c), ("lora",))
    checks.run("sft_step", train(training.sft_trainer, "sft", sft_rows, "loss"), ("lora",))
    grpo_step = train(training.grpo_trainer, "grpo", grpo_rows[: c.batch_size // c.k], "reward")
    checks.run("grpo_step", grpo_step, ("lora",))
    checks.run("orpo_step", train(training.orpo_trainer, "orpo", orpo_rows, "loss"), ("lora",))
    checks.run("save", save, ("lora",))
    # Reload through the same engine: the saved adapter as a LoRA request (GPU); on the CPU, loaded and merged.
    reload = {"adapter": state.get("adapter"), "model_ref": c.model if args.cpu else None}
    checks.run("reload", sample("adapter", **reload), ("save",))
    return checks.verdict()


if __name__ == "__main__":
    sys.exit(main())
