"""The GPU questions, each decided in one place: import Unsloth first, which precision, is the driver new enough.

`import_unsloth_first` runs when `helpers` is imported: on a CUDA machine with Unsloth installed it imports
Unsloth before anything imports trl, transformers or peft (Unsloth patches them by rebinding names, so a class
imported earlier escapes the patch). Without Unsloth it imports nothing, so `answers` and `metrics` stay light.
Model loading lives in `models`; this module never loads a model.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Unsloth must come before these: a trainer class imported from them earlier stays unpatched (unsloth 2026.10.9
# rebinds `trl.<Trainer>` to its patched class: unsloth/models/rl.py, about lines 3945-3975).
PATCHED_BY_UNSLOTH = ("trl", "transformers", "peft")
# Oldest NVIDIA driver (Linux) for a CUDA major version: CUDA 13 needs 580, CUDA 12 works from 525 through
# minor-version compatibility (NVIDIA's CUDA compatibility guide, table "CUDA Toolkit and driver versions").
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
# The two installs of the GPU set, by driver (commands run from the repository root). PyPI's torch 2.13.0 and
# vllm 0.32.0 are CUDA 13 builds. For CUDA 12.8: torch from the PyTorch cu128 index (pinned with its local
# version, so an installed CUDA 13 torch is replaced and requirements-gpu.txt's `torch==2.13.0` is then met;
# torchvision too: PyPI's 0.28.0 is a CUDA 13 build),
# and vLLM's cu128 release wheel (the address pattern of vLLM's GPU install docs; not yet tried).
PYPI_INSTALL = (
    "pip install vllm==0.32.0",
    "pip install -r requirements-gpu.txt",
    "pip install --no-deps -e .",
)
CUDA12_INSTALL = (
    "pip install torch==2.13.0+cu128 torchvision==0.28.0+cu128 --index-url https://download.pytorch.org/whl/cu128",
    "pip install 'vllm @ https://github.com/vllm-project/vllm/releases/download/v0.32.0/"
    "vllm-0.32.0+cu128-cp38-abi3-manylinux_2_35_x86_64.whl'",
    "pip install -r requirements-gpu.txt",
    "pip install --no-deps -e .",
)
DRIVER_RE = re.compile(r"^\d+(\.\d+)+$")


class NoGPU(RuntimeError):
    """A GPU-only profile or option was asked for where the Unsloth backend cannot run."""


def unsloth_installed() -> bool:
    """Whether Unsloth can be imported (the GPU set is installed)."""
    return importlib.util.find_spec("unsloth") is not None


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def import_unsloth_first() -> bool:
    """Import Unsloth now when this is its machine (CUDA and Unsloth installed); True when it was imported.

    Raises ImportError when trl, transformers or peft were imported before it: their trainers would stay
    unpatched (SFT then fails on its first step with "Logits are empty").
    """
    if "unsloth" in sys.modules or not unsloth_installed() or not cuda_available():
        return "unsloth" in sys.modules
    early = [name for name in PATCHED_BY_UNSLOTH if name in sys.modules]
    if early:
        raise ImportError(
            f"{', '.join(early)} was imported before Unsloth, so Unsloth cannot patch its trainers. Restart the "
            "kernel (Colab: Runtime > Restart session) and import helpers before anything that imports "
            f"{', '.join(PATCHED_BY_UNSLOTH)}."
        )
    import unsloth  # noqa: F401  (imported for its patches)

    return True


def bf16_supported() -> bool:
    """bf16 where the GPU computes in it natively (compute capability 8.0+, Ampere on), as Unsloth decides.

    Not `torch.cuda.is_bf16_supported()`: it is True on a T4 (bf16 is emulated there), where Unsloth loads
    the model in fp16 and its trainers refuse bf16 arguments.
    """
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


CPU_DTYPE_ENV = (
    "GSM8K_CPU_DTYPE"  # float32 or bfloat16: overrides the CPU's own choice (tests force fp32 with it)
)
CPU_DTYPES = ("float32", "bfloat16")


def cpu_dtype() -> tuple[str, str]:
    """(the dtype the CPU samples and trains in, why): bfloat16 where the CPU computes it natively (AMX or
    AVX512_BF16), float32 elsewhere (emulated bf16 is slower than fp32); `GSM8K_CPU_DTYPE` overrides both."""
    import os

    import torch

    forced = os.environ.get(CPU_DTYPE_ENV)
    if forced:
        if forced not in CPU_DTYPES:
            raise ValueError(f"{CPU_DTYPE_ENV}={forced!r}: use one of {', '.join(CPU_DTYPES)}, or unset it.")
        return forced, f"set by {CPU_DTYPE_ENV}"
    if torch.cpu._is_amx_tile_supported():
        return "bfloat16", "this CPU has AMX (native bf16)"
    if torch.cpu._is_avx512_bf16_supported():
        return "bfloat16", "this CPU has AVX512_BF16 (native bf16)"
    return "float32", "this CPU has no native bf16 (no AMX, no AVX512_BF16): bf16 would be emulated"


def driver_version() -> str | None:
    """The NVIDIA driver version (e.g. "550.54.15"), from nvidia-smi or /proc; None when there is none."""
    if shutil.which("nvidia-smi"):
        try:
            result = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            out = result.stdout.split() if result.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            out = []
        if out and DRIVER_RE.match(out[0]):  # a failing nvidia-smi prints its complaint on stdout
            return out[0]
    proc = Path("/proc/driver/nvidia/version")
    match = re.search(r"Kernel Module\s+([0-9.]+)", proc.read_text()) if proc.is_file() else None
    return match.group(1) if match else None


def install_for(driver: str) -> tuple[str, ...] | None:
    """The install of the GPU set this driver runs: PyPI's CUDA 13 build from 580, the CUDA 12.8 build from 525."""
    major = int(driver.split(".")[0])
    return PYPI_INSTALL if major >= MIN_DRIVER[13] else CUDA12_INSTALL if major >= MIN_DRIVER[12] else None


def diagnose(torch_cuda: str | None, driver: str | None, has_cuda: bool, has_unsloth: bool) -> str | None:
    """Why the Unsloth backend cannot run here and what to install instead; None when it can.

    Args:
        torch_cuda: the CUDA version torch was built with (`torch.version.cuda`), None for a CPU build.
        driver: the NVIDIA driver version, None when no driver is installed.
    """
    if driver is None:
        return (
            "no NVIDIA driver was found (no nvidia-smi, no /proc/driver/nvidia/version): this machine has no "
            "GPU. On Colab: Runtime > Change runtime type > T4 GPU, then run the notebook again."
        )
    if torch_cuda is None:
        return (
            "the installed torch is a CPU build (torch.version.cuda is None), so there is no GPU backend. "
            f"Install the GPU set for driver {driver}: {' && '.join(install_for(driver) or ('(none: update the driver)',))}"
        )
    major = int(torch_cuda.split(".")[0])
    needed = MIN_DRIVER.get(major, 0)
    if int(driver.split(".")[0]) < needed:
        return (
            f"NVIDIA driver {driver} is too old for the installed build (torch built with CUDA {torch_cuda}, "
            f"which needs driver >= {needed}), so torch sees no GPU. Update the driver to >= {needed}, or "
            f"install the CUDA 12.8 build (driver >= {MIN_DRIVER[12]}): {' && '.join(CUDA12_INSTALL)}"
            if major >= 13
            else f"NVIDIA driver {driver} is too old for CUDA {torch_cuda} (needs >= {needed}): update it."
        )
    if not has_cuda:
        return (
            f"torch (CUDA {torch_cuda}) sees no GPU although driver {driver} is installed: check "
            "CUDA_VISIBLE_DEVICES and nvidia-smi."
        )
    if not has_unsloth:
        return f"CUDA works but Unsloth is not installed. Install the GPU set: {' && '.join(PYPI_INSTALL)}"
    return None


def require_gpu(what: str) -> None:
    """Refuse a GPU-only profile or option where the Unsloth backend cannot run, saying why and what to do."""
    import torch

    problem = diagnose(torch.version.cuda, driver_version(), cuda_available(), unsloth_installed())
    if problem is not None:
        raise NoGPU(
            f"{what} runs on a GPU only, and {problem} On a CPU, use the profile 'smoke'; the GPU installs are in docs/gpu.md."
        )


def memory_report() -> str:
    """GPU memory in use and total, as one line ("no GPU" without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return "no GPU"
    free, total = torch.cuda.mem_get_info()
    return (
        f"GPU memory: {(total - free) / 2**30:.1f} of {total / 2**30:.1f} GiB in use "
        f"(this process: {torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated by torch)"
    )
