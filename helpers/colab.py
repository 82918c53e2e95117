"""Colab set-up, called by every notebook's first cell: keep the run on Drive, install the GPU stack the driver
can run, and ask for the restart a re-pinned kernel needs.

Each Colab notebook opens its own runtime, so `outputs/` is linked to a Drive folder that outlives it. The
install is chosen from the NVIDIA driver before anything is installed (`accelerator.MIN_DRIVER`). Nothing here
runs outside Colab; GPU decisions themselves live in `accelerator`.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from helpers import accelerator

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS_GPU = REPO / "requirements-gpu.txt"
PIN_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)")
RESTART = (
    "The GPU stack is installed. Restart the session now (Runtime > Restart session), then run the notebook "
    "again (Runtime > Run all): the running kernel still holds the versions it had before."
)


class StopHere(SystemExit):
    """Ends a Colab cell (and Run all) with a message for the user."""


def on_colab() -> bool:
    """Whether this kernel runs on Colab (Colab sets COLAB_* environment variables)."""
    return any(key.startswith("COLAB_") for key in os.environ)


def normalize(name: str) -> str:
    """PEP 503 name: `unsloth_zoo` and `unsloth-zoo` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = REQUIREMENTS_GPU) -> dict[str, str]:
    """{normalized name: version} of every `name==version` line (extras allowed, comments ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN_RE.match(line)
        if match:
            pins[normalize(match.group(1))] = match.group(3)
    return pins


def pinned(package: str) -> str | None:
    """The version requirements-gpu.txt pins for `package`."""
    return read_pins().get(normalize(package))


def stack_installed() -> bool:
    """Whether the pinned Unsloth, vLLM, transformers and TRL are installed (a local build tag such as vLLM's
    `+cu128` is the same release)."""
    try:
        return all(
            importlib.metadata.version(p).split("+")[0] == pinned(p)
            for p in ("unsloth", "vllm", "transformers", "trl")
        )
    except importlib.metadata.PackageNotFoundError:
        return False


def install_commands(driver: str | None) -> list[str]:
    """The pip commands for this driver (`accelerator.install_for`), run from the repository root.

    Raises StopHere, before anything is installed, when no driver can run either build.
    """
    if driver is None:
        raise StopHere(
            "No GPU in this runtime. Runtime > Change runtime type > T4 GPU (or any GPU), Save, then run the "
            "notebook again."
        )
    commands = accelerator.install_for(driver)
    if commands is None:
        raise StopHere(
            f"NVIDIA driver {driver} is too old for the pinned stack: its PyPI build needs driver >= "
            f"{accelerator.MIN_DRIVER[13]} (CUDA 13) and its CUDA 12.8 build driver >= {accelerator.MIN_DRIVER[12]}. "
            "Use a runtime with a newer driver."
        )
    return list(commands)  # relative paths: `set_up` runs them from the repository root


def link_outputs(drive_dir: str, repo: Path = REPO) -> Path:
    """Make the series' `outputs/` a link to `<drive_dir>/outputs`, mounting Drive first when it lives there."""
    if drive_dir.startswith("/content/drive"):
        from google.colab import drive  # only on Colab

        drive.mount("/content/drive")
    target = Path(drive_dir) / "outputs"
    target.mkdir(parents=True, exist_ok=True)
    outputs = repo / "outputs"
    if outputs.is_symlink():
        outputs.unlink()
    elif outputs.is_dir():
        os.replace(outputs, repo / "outputs.repo")  # the repository's own README of the folder, kept
    outputs.symlink_to(target, target_is_directory=True)
    return target


def set_up(drive_dir: str) -> None:
    """On Colab: link `outputs/` to Drive, install the stack the driver can run, then stop for a restart."""
    if not on_colab():
        return
    print(f"Run directories live in {link_outputs(drive_dir)} (Drive: they outlive this runtime).")
    if stack_installed():
        print("GPU stack installed:", accelerator.memory_report())
        return
    for command in install_commands(accelerator.driver_version()):
        print("$", command, flush=True)
        result = subprocess.run(
            [sys.executable, "-m", *shlex.split(command)], cwd=REPO, capture_output=True, text=True
        )
        if result.returncode:
            raise StopHere(f"`{command}` failed:\n{result.stderr[-3000:]}")
    raise StopHere(RESTART)
