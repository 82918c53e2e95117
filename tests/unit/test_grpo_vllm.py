"""GRPO generating through TRL's vLLM engine on the CPU (colocate mode), the path vLLM takes in GRPO on a GPU.

The CPU profiles generate with transformers (`training.grpo_trainer` says why); this test covers the other path:
one GRPO step whose completions come from vLLM, then the check that TRL pushes the policy's (merged LoRA)
weights into vLLM. It runs in a child process: TRL's colocate mode sets RANK/WORLD_SIZE and starts
torch.distributed, which must not leak into other tests. Run: `pytest tests/unit/test_grpo_vllm.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cpu_engine

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import functools, json, pathlib, sys
import torch, vllm
import trl.generation.vllm_generation as vllm_generation
from helpers import config, data, models, runs, trainer_config, training

# TRL builds its engine without enforce_eager, so vLLM compiles the model (96-160 s on 2 cores, no faster after).
vllm_generation.LLM = functools.partial(vllm.LLM, enforce_eager=True)
smoke = config.PROFILES["smoke"]
model, tokenizer = models.load_model(models.SMOLLM2_ALIAS, trainable=True)
model = models.add_lora(model, r=smoke.lora_r, alpha=smoke.lora_alpha)
problems = data.make_arithmetic(1, 0, "train")
rows = [{"prompt": data.build_messages(problems["question"][0]), "answer": problems["gold"][0]}]
run = runs.Run(pathlib.Path(sys.argv[1]), smoke)
args = trainer_config.grpo_config(run, use_vllm=True, report_to=[], max_steps=1)
trainer = training.grpo_trainer(model, tokenizer, args, rows)
trainer.train()
log = trainer.state.log_history[0]

# The weight push: give the adapter weights that change the text, push them, and compare greedy decoding.
prompt = tokenizer(data.render_prompt(tokenizer, problems["question"][0]), add_special_tokens=False)
ids = prompt["input_ids"]
engine = trainer.vllm_generation
def vllm_greedy():
    out = engine.llm.generate([{"prompt_token_ids": ids}], vllm.SamplingParams(temperature=0, max_tokens=16),
                              use_tqdm=False)
    return list(out[0].outputs[0].token_ids)
before = vllm_greedy()
with torch.no_grad():
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.copy_(torch.randn_like(param) * 0.02)
engine.sync_weights()
after = vllm_greedy()
model.eval()
with torch.no_grad():
    hf = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        do_sample=False, max_new_tokens=16)[0, len(ids):].tolist()
print(json.dumps({"use_vllm": trainer.use_vllm, "mode": trainer.vllm_mode,
                  "llm": type(engine.llm).__module__, "mean_length": log["completions/mean_length"],
                  "has_reward": "reward" in log, "before": before, "after": after, "hf": hf[:len(after)]}))
"""


@pytest.mark.skipif(cpu_engine.unavailable() is not None, reason=str(cpu_engine.unavailable()))
@pytest.mark.slow
def test_grpo_generates_with_vllm_and_pushes_the_policy_weights(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["use_vllm"] and report["mode"] == "colocate" and report["llm"].startswith("vllm")
    assert report["mean_length"] > 0 and report["has_reward"]
    assert report["after"] == report["hf"]  # vLLM decodes with the policy's weights after the push
    assert report["after"] != report["before"]  # ... and the push changed them
