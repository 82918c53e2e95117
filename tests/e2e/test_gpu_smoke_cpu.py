"""scripts/gpu_smoke.py on the CPU path (`--cpu`): every check of the GPU first run, with the CPU model.

On a GPU the same script runs the original study's model through Unsloth and one vLLM engine (docs/gpu.md).
Run: `.venv/bin/python -m pytest tests/e2e/test_gpu_smoke_cpu.py`
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"
CHECKS = (
    "load",
    "lora",
    "sample",
    "sft_step",
    "optimizer",
    "precision",
    "grpo_step",
    "orpo_step",
    "save",
    "reload",
)


@pytest.mark.slow
def test_every_check_passes_on_the_cpu_path(beside) -> None:
    """`tests/conftest.py`'s `beside` runs `gpu_smoke.py --cpu --problems 2`."""
    result, out = beside.result("gpu-smoke-cpu"), beside.root / "gpu"
    verdicts = [line for line in result.stdout.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "SKIP")]
    assert [line.split(":")[0] for line in verdicts] == [f"PASS {c}" for c in CHECKS], (
        result.stdout + result.stderr[-3000:]
    )
    assert result.returncode == 0 and "verdict: 10 passed, 0 skipped, 0 failed" in result.stdout
    assert (
        "PASS optimizer: torch.optim.adamw.AdamW" in result.stdout
        and "PASS precision: CPU: fp32" in result.stdout
    )
    assert (out / "models" / "GPU_SMOKE" / "manifest.json").is_file()


def test_without_a_gpu_it_refuses_and_says_why(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "error: gpu_smoke.py runs on a GPU only, and " in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())
