"""GPU decisions without a GPU: precision, the driver diagnosis, GPU-only profiles refused on the CPU.

Run: `.venv/bin/python -m pytest tests/unit/test_accelerator.py`
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import accelerator, config, pipeline, runs, trainer_config


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """Make torch report one CUDA device of a chosen compute capability (and bf16 'supported', as on a T4)."""

    def install(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return install


@pytest.mark.parametrize(
    ("capability", "bf16"),
    [
        ((7, 5), False),  # T4: bf16 only emulated; Unsloth loads fp16 there
        ((7, 0), False),  # V100
        ((8, 0), True),  # A100
        ((8, 9), True),  # L4
        ((9, 0), True),  # H100
    ],
)
def test_precision_follows_the_compute_capability(fake_gpu, capability, bf16: bool, tmp_path: Path) -> None:
    fake_gpu(capability)
    assert accelerator.bf16_supported() is bf16
    args = trainer_config.trainer_args(runs.Run(tmp_path, config.PROFILES["colab-t4"]), "SFT_1")
    assert (args["bf16"], args["fp16"]) == (bf16, not bf16)  # never bf16 where the model is fp16


def test_without_cuda_there_is_no_bf16() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert accelerator.bf16_supported() is False and accelerator.memory_report() == "no GPU"


@pytest.mark.parametrize(
    ("torch_cuda", "driver", "has_cuda", "has_unsloth", "expected"),
    [
        (
            None,
            None,
            False,
            False,
            "no NVIDIA driver",
        ),  # a laptop with the CPU set: no GPU, whatever is installed
        ("13.0", None, False, True, "no NVIDIA driver"),
        (None, "580.65.06", False, False, "CPU build"),  # a GPU machine with the CPU set: install the GPU set
        (None, "550.54.15", False, False, "torch==2.13.0+cu128"),  # ... the build its driver runs
        (
            "13.0",
            "550.54.15",
            False,
            True,
            "driver 550.54.15 is too old",
        ),  # Colab's older driver, CUDA 13 build
        ("13.0", "550.54.15", False, True, "cu128"),  # ... and the CUDA 12.8 route is named
        ("13.0", "580.65.06", False, True, "sees no GPU"),  # a driver new enough, yet no device
        ("13.0", "580.65.06", True, False, "Unsloth is not installed"),
        ("12.8", "550.54.15", False, True, "sees no GPU"),  # a CUDA 12 build runs on a 550 driver
        ("12.8", "470.82.01", False, True, "too old for CUDA 12.8 (needs >= 525)"),
    ],
)
def test_diagnosis_names_the_problem_and_the_fix(torch_cuda, driver, has_cuda, has_unsloth, expected) -> None:
    assert expected in accelerator.diagnose(torch_cuda, driver, has_cuda, has_unsloth)


def test_a_working_gpu_has_nothing_to_diagnose() -> None:
    assert accelerator.diagnose("13.0", "580.65.06", True, True) is None


@pytest.mark.parametrize("profile", config.GPU_PROFILES)
def test_a_gpu_profile_is_refused_on_the_cpu_and_writes_nothing(profile: str, tmp_path: Path) -> None:
    if accelerator.diagnose(
        torch.version.cuda, accelerator.driver_version(), torch.cuda.is_available(), True
    ):
        with pytest.raises(accelerator.NoGPU, match=f"Profile '{profile}' runs on a GPU only, and "):
            runs.open_run(tmp_path / "run", profile)
        assert not (tmp_path / "run").exists()
    else:
        pytest.skip("this machine has a working GPU")


def test_the_pipeline_prints_the_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pipeline.main(["run", "--profile", "gpu-smoke", "--run-dir", str(tmp_path / "r")]) == 1
    assert "error: Profile 'gpu-smoke' runs on a GPU only" in capsys.readouterr().err


def test_a_failing_nvidia_smi_is_not_a_driver_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi that cannot reach the driver prints its complaint on stdout and exits 9."""
    complaint = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    monkeypatch.setattr(accelerator.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        accelerator.subprocess, "run", lambda *a, **k: type("R", (), {"returncode": 9, "stdout": complaint})()
    )
    monkeypatch.setattr(accelerator, "Path", lambda p: Path("/nonexistent/driver/version"))
    assert accelerator.driver_version() is None
