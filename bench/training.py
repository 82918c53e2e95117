"""Training on the CPU: seconds per step of SFT, ORPO and GRPO in fp32 against bf16 autocast, and GRPO's
generation through transformers' `generate` against TRL's vLLM engine (colocate, eager), in one run.

Run: `.venv/bin/python bench/training.py` (about 6 minutes on 2 cores). Every configuration trains LoRA adapters
(the smoke profile's r and alpha) on `smollm2-135m` with the smoke's trainer settings, built by `trainer_config`
and `training` (the series' code), on toy rows: SFT and ORPO on the data set's worked solutions (ORPO rejects
the same solution with a wrong final answer), GRPO on toy prompts, 1 prompt x 4 completions of at most 96
tokens a step. Each configuration runs in its own process (TRL's colocate mode sets torch.distributed's
environment, and the timings stay clean); the first step of each is warm-up and left out of seconds per step.
The losses are printed step by step for both precisions: the same rows in the same order from the same adapter
init, so sound bf16 losses track fp32's closely.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

# --- settings --------------------------------------------------------------------------------------------------
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--sft-steps", type=int, default=12, help="SFT optimizer steps per configuration")
parser.add_argument("--orpo-steps", type=int, default=8, help="ORPO optimizer steps per configuration")
parser.add_argument("--grpo-steps", type=int, default=5, help="GRPO optimizer steps per configuration")
parser.add_argument("--only", nargs="*", default=None, help="run only these configurations (names in JOBS)")
parser.add_argument("--job", default=None, help="(internal) run one configuration in this process")

ROOT = Path(__file__).resolve().parents[1]
# name -> (method, precision, generator). vLLM's engine picks its own dtype ("auto": bf16 on a CPU with native
# bf16); the precision here is the trainer's (its forward, backward and logprobs).
JOBS = {
    "sft-fp32": ("sft", "fp32", None),
    "sft-bf16": ("sft", "bf16", None),
    "orpo-fp32": ("orpo", "fp32", None),
    "orpo-bf16": ("orpo", "bf16", None),
    "grpo-fp32": ("grpo", "fp32", "generate"),
    "grpo-bf16": ("grpo", "bf16", "generate"),
    "grpo-vllm-fp32": ("grpo", "fp32", "vllm"),
    "grpo-vllm-bf16": ("grpo", "bf16", "vllm"),
}
# bf16 losses count as sound when every loss is finite and, after the first step, they sit above or below fp32's
# by at most this share of fp32's mean loss on average. Both see the same rows in the same order from the same
# init, so at step 1 only rounding separates them (about 0.5 %); a drift past it means bf16 learns differently.
# GRPO's samples differ by precision, so its losses are only checked finite.
LOSS_TOLERANCE = 0.02
ROWS = {"sft": "4 rows", "orpo": "4 pairs", "grpo": "1 prompt x 4 completions (at most 96 tokens)"}


# --- one configuration (child process) -------------------------------------------------------------------------
def toy_rows(n: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(SFT rows, ORPO pairs, GRPO prompts) for `n` toy training problems, in the series' format."""
    from helpers import data, distillation

    problems = data.make_arithmetic(n, 0, "train")
    sft = distillation.gold_rows(problems)
    orpo = []
    for row, gold in zip(sft, problems["gold"], strict=True):
        right = row["completion"][0]["content"]
        wrong = right.removesuffix(f"#### {gold}") + f"#### {int(gold) + 1}"
        orpo.append(
            {**row, "chosen": row["completion"], "rejected": [{"role": "assistant", "content": wrong}]}
        )
    grpo = [{"prompt": r["prompt"], "answer": g} for r, g in zip(sft, problems["gold"], strict=True)]
    return sft, orpo, grpo


def run_job(name: str, steps: int) -> dict:
    """Train one configuration for `steps` steps; its timings, losses and what ran (autocast, engine dtype)."""
    import functools
    import tempfile

    import torch
    from transformers import TrainerCallback

    from helpers import config, models, runs, trainer_config, training

    method, precision, generator = JOBS[name]
    smoke = config.PROFILES["smoke"]
    # The autocast state of every forward through the first decoder layer, in training and in GRPO's generation
    seen: dict[str, set[str]] = {"train": set(), "generate": set()}
    phase = ["train"]

    def note_autocast(module: object, args: object) -> None:
        enabled = torch.is_autocast_enabled("cpu")
        seen[phase[0]].add(str(torch.get_autocast_dtype("cpu")).removeprefix("torch.") if enabled else "off")

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.seconds.append(time.perf_counter() - self.started)

    if generator == "vllm":
        import trl.generation.vllm_generation as vllm_generation
        import vllm

        # TRL builds its engine without enforce_eager, so vLLM compiles the model (96-160 s on 2 cores)
        vllm_generation.LLM = functools.partial(vllm.LLM, enforce_eager=True)
    sft, orpo, grpo = toy_rows(4 * steps)
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS, trainable=True)
    model = models.add_lora(model, r=smoke.lora_r, alpha=smoke.lora_alpha)
    model.base_model.model.model.layers[0].register_forward_pre_hook(note_autocast)
    with tempfile.TemporaryDirectory() as tmp:
        run = runs.Run(Path(tmp), smoke)
        # bf16 with use_cpu: accelerate autocasts the forward on the CPU (see `report`)
        changes = {"report_to": [], "max_steps": steps, "bf16": precision == "bf16", "fp16": False}
        started = time.perf_counter()
        if method == "sft":
            trainer = training.sft_trainer(model, tokenizer, trainer_config.sft_config(run, **changes), sft)
        elif method == "orpo":
            trainer = training.orpo_trainer(
                model, tokenizer, trainer_config.orpo_config(run, **changes), orpo
            )
        else:
            use_vllm = generator == "vllm"
            args = trainer_config.grpo_config(run, use_vllm=use_vllm, **changes)
            trainer = training.grpo_trainer(model, tokenizer, args, grpo)
        built_s = time.perf_counter() - started
        generate_s: list[float] = []
        if method == "grpo":
            single_turn = trainer._generate_single_turn

            def timed(*args: object, **kwargs: object) -> object:
                t, phase[0] = time.perf_counter(), "generate"
                out = single_turn(*args, **kwargs)
                generate_s.append(time.perf_counter() - t)  # vLLM's includes the weight push before it
                phase[0] = "train"
                return out

            trainer._generate_single_turn = timed
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "name": name,
        "step_s": timer.seconds,
        "loss": [entry["loss"] for entry in logs],
        "built_s": built_s,
        "autocast": {key: "+".join(sorted(states)) for key, states in seen.items() if states},
    }
    if method == "grpo":
        result["generate_s"] = generate_s
        result["reward"] = [entry.get("reward", math.nan) for entry in logs]
        result["length"] = [entry.get("completions/mean_length", math.nan) for entry in logs]
        if generator == "vllm":
            result["engine_dtype"] = str(trainer.vllm_generation.llm.llm_engine.model_config.dtype)
    return result


# --- the parent: run every configuration, print the comparison -------------------------------------------------
def mean_after_first(values: list[float]) -> float:
    """The mean of all but the first value (the warm-up step), NaN when there is nothing after it."""
    rest = values[1:]
    return sum(rest) / len(rest) if rest else math.nan


def loss_drift(reference: list[float], other: list[float]) -> tuple[float, float]:
    """(the gap at step 1, the mean signed gap after it) of `other`'s losses above `reference`'s, each as a share
    of the reference's mean loss."""
    scale = sum(abs(x) for x in reference) / len(reference)
    gaps = [b - a for a, b in zip(reference, other, strict=True)]
    return gaps[0] / scale, sum(gaps[1:]) / max(len(gaps) - 1, 1) / scale


def verdict(reference: list[float], other: list[float], compare: bool) -> str:
    """Sound, or why not: every loss finite and, when `compare`, no drift from the reference (`LOSS_TOLERANCE`)."""
    if not all(math.isfinite(x) for x in reference + other):
        return "unsound (a loss is not finite)"
    if not compare:
        return (
            "sound (finite; GRPO's samples differ by precision, so its losses are not compared step by step)"
        )
    first, drift = loss_drift(reference, other)
    word = "sound" if abs(drift) <= LOSS_TOLERANCE else "unsound"
    return (
        f"{word}: {100 * drift:+.1f} % of fp32's mean loss after step 1 (tolerance {100 * LOSS_TOLERANCE:.0f} %), "
        f"{100 * first:+.1f} % at step 1 (same weights: rounding alone)"
    )


def spawn(name: str, steps: int) -> dict:
    """Run one configuration in a fresh process; its result, or an error line."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--job", name, f"--{JOBS[name][0]}-steps", str(steps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"name": name, "error": out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    return {**json.loads(lines[-1].removeprefix("RESULT ")), "wall_s": time.perf_counter() - started}


def tokens_per_s(result: dict) -> float:
    """GRPO's completion tokens a second of generation, after the first step (4 completions a step)."""
    tokens = sum(4 * length for length in result["length"][1:])
    return tokens / sum(result["generate_s"][1:]) if result["generate_s"][1:] else math.nan


def numbers(values: list[float], digits: int = 3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


def report(results: dict[str, dict], steps: dict[str, int]) -> None:
    for method in ("sft", "orpo", "grpo"):
        names = [n for n in JOBS if JOBS[n][0] == method and n in results]
        if not names:
            continue
        print(
            f"\n{method.upper()}: {steps[method]} steps of {ROWS[method]}; s/step = mean of steps 2-{steps[method]}"
        )
        for name in names:
            r = results[name]
            if "error" in r:
                print(f"  {name:>15}: failed: {r['error']}")
                continue
            shown = ", ".join(f"{key} {state}" for key, state in r["autocast"].items())
            line = f"  {name:>15}: {mean_after_first(r['step_s']):6.2f} s/step (autocast: {shown}"
            if "engine_dtype" in r:
                line += (
                    f", vLLM engine {r['engine_dtype'].removeprefix('torch.')}, built in {r['built_s']:.0f} s"
                )
            print(line + f"; {r['wall_s']:.0f} s in all)")
            print(f"  {'':>15}  seconds by step: {numbers(r['step_s'], 1)}")
            print(f"  {'':>15}  loss by step:    {numbers(r['loss'], 4)}")
            if method == "grpo":
                print(f"  {'':>15}  generate s/step: {mean_after_first(r['generate_s']):.2f}, "
                      f"{tokens_per_s(r):.0f} tok/s (by step: {numbers(r['generate_s'], 1)})")  # fmt: skip
                print(f"  {'':>15}  reward by step:  {numbers(r['reward'], 2)}; "
                      f"mean length: {numbers(r['length'], 0)} tokens")  # fmt: skip
        compare(results, method)


def compare(results: dict[str, dict], method: str) -> None:
    """The ratios that decide: bf16 against fp32, and for GRPO vLLM against `generate`."""
    ok = {n: r for n, r in results.items() if "error" not in r and JOBS[n][0] == method}
    pairs = [("grpo-fp32", "grpo-bf16"), ("grpo-vllm-fp32", "grpo-vllm-bf16")] if method == "grpo" else []
    pairs = pairs or [(f"{method}-fp32", f"{method}-bf16")]
    for fp32, bf16 in pairs:
        if fp32 in ok and bf16 in ok:
            a, b = ok[fp32], ok[bf16]
            speedup = mean_after_first(a["step_s"]) / mean_after_first(b["step_s"])
            print(f"  {bf16} vs {fp32}: {speedup:.2f}x the speed; losses "
                  f"{verdict(a['loss'], b['loss'], method != 'grpo')}")  # fmt: skip
    for precision in ("fp32", "bf16"):
        hf, vl = ok.get(f"grpo-{precision}"), ok.get(f"grpo-vllm-{precision}")
        if hf and vl:
            step = mean_after_first(hf["step_s"]) / mean_after_first(vl["step_s"])
            gen = mean_after_first(hf["generate_s"]) / mean_after_first(vl["generate_s"])
            rate = tokens_per_s(vl) / tokens_per_s(hf)
            print(f"  vLLM vs generate, trainer in {precision}: {step:.2f}x the speed a step, {gen:.2f}x in "
                  f"generation time, {rate:.2f}x in tok/s (vLLM's engine build, {vl['built_s']:.0f} s, apart)")  # fmt: skip


def main() -> None:
    args = parser.parse_args()
    steps = {"sft": args.sft_steps, "orpo": args.orpo_steps, "grpo": args.grpo_steps}
    if args.job:
        print("RESULT " + json.dumps(run_job(args.job, steps[JOBS[args.job][0]])))
        return
    import torch

    from helpers import accelerator

    dtype, why = accelerator.cpu_dtype()
    print(f"CPU: torch capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; "
          f"cpu_dtype(): {dtype} ({why})")  # fmt: skip
    # transformers 5.17.0 only names the precision (training_args.py:1582-1586: bf16 -> mixed_precision "bf16");
    # accelerate 1.15.0 turns it into autocast on the CPU: native_amp is True for bf16 on "cpu"
    # (accelerator.py:585-591), prepare_model wraps forward in it (accelerator.py:1824-1835), as
    # torch.autocast("cpu", dtype=torch.bfloat16) (utils/modeling.py:2099-2113). The "autocast" column checks it.
    # GRPO's `generate` escapes it: PeftModelForCausalLM.generate calls the inner model's generate (peft 0.21.2,
    # peft_model.py:2242-2244), whose forward accelerate did not wrap; TRL autocasts its logprob forward itself
    # (grpo_trainer.py:1440, 1468).
    names = [n for n in JOBS if args.only is None or n in args.only]
    started = time.perf_counter()
    results = {name: spawn(name, steps[JOBS[name][0]]) for name in names}
    report(results, steps)
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
