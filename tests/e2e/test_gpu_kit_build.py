"""The real GPU kit (scripts/gpu_kit.py): built once into a git-ignored folder under outputs/, then checked: it fits
beside the repository, Unsloth and bitsandbytes are stripped as the rules say, pip installs every wheel and
kit.json matches the files.

Needs PyPI for the wheels the cache lacks (skips with the reason when it cannot be reached); about 15 s with a
warm cache. Run: `.venv/bin/python -m pytest tests/e2e/test_gpu_kit_build.py`
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_kit.py"
PYPI = "https://pypi.org/simple/"
LIMIT = 60 * 2**20


def require_pypi() -> None:
    try:
        urllib.request.urlopen(PYPI + "pip/", timeout=15).close()
    except OSError as err:
        pytest.skip(f"PyPI ({PYPI}) cannot be reached, so the kit's wheels cannot be downloaded: {err}")


@pytest.fixture(scope="module")
def kit() -> Iterator[Path]:
    """The kit, built by the CLI into a fresh folder under outputs/ (git-ignored, as the script demands)."""
    require_pypi()
    parent = Path(tempfile.mkdtemp(prefix=".test-gpu-kit-", dir=ROOT / "outputs"))
    dest = parent / "gpu-kit"
    result = subprocess.run([sys.executable, str(SCRIPT), "--dest", str(dest)], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    relative = dest.relative_to(ROOT)
    assert result.stdout.splitlines()[-3:] == [
        "On the GPU machine (no internet), from the repository root:",
        f"  python3 scripts/gpu_check.py --kit {relative} --out outputs/gpu-check",
        f"Send {relative} with the repository: it is git-ignored, so copy it by name.",
    ]
    yield dest
    shutil.rmtree(parent)


def manifest(kit: Path) -> dict:
    return json.loads((kit / "kit.json").read_text())


def wheel(kit: Path, name: str) -> Path:
    (path,) = (kit / "wheels").glob(f"{name}-*.whl")
    return path


@pytest.mark.slow
def test_the_kit_fits_beside_the_repository(kit: Path) -> None:
    found = manifest(kit)
    kit_bytes = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert kit_bytes - (kit / "kit.json").stat().st_size == found["kit_bytes"]
    assert kit_bytes + found["repo_bytes"] < LIMIT == found["limit_bytes"]


@pytest.mark.slow
def test_unsloth_is_stripped_of_studio_and_its_cli(kit: Path) -> None:
    with zipfile.ZipFile(wheel(kit, "unsloth")) as whl:
        tops = {name.split("/")[0] for name in whl.namelist()}
        entry_points = next(whl.read(n) for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "unsloth/__init__.py" in whl.namelist()
    assert not tops & {"studio", "unsloth_cli"} and b"unsloth_cli" not in entry_points


@pytest.mark.slow
def test_bitsandbytes_keeps_exactly_the_cuda130_and_cpu_libraries(kit: Path) -> None:
    with zipfile.ZipFile(wheel(kit, "bitsandbytes")) as whl:
        libs = {n for n in whl.namelist() if n.startswith("bitsandbytes/libbitsandbytes_")}
    assert libs == {"bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cpu.so"}


@pytest.mark.slow
def test_pip_installs_every_wheel(kit: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    wheels = sorted(map(str, (kit / "wheels").glob("*.whl")))
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--no-index", "--no-deps", "--no-compile",
               "--python-version", "3.12", "--target", str(tmp_path), *wheels]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for package in (
        "unsloth",
        "unsloth_zoo",
        "trl",
        "datasets",
        "peft",
        "bitsandbytes",
        "dill",
        "multiprocess",
    ):
        assert (tmp_path / package / "__init__.py").is_file(), package
    assert not (tmp_path / "studio").exists() and not (tmp_path / "bin" / "unsloth").exists()


@pytest.mark.slow
def test_kit_json_lists_every_wheel_with_its_hash(kit: Path) -> None:
    found = manifest(kit)
    assert {w["file"] for w in found["wheels"]} == {p.name for p in (kit / "wheels").iterdir()}
    for entry in found["wheels"]:
        data = (kit / "wheels" / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert sorted(p.name for p in (kit / "tokenizer").iterdir()) == found["tokenizer"]
    assert "tokenizer.json" in found["tokenizer"] and "model.safetensors" not in found["tokenizer"]


@pytest.fixture(scope="module")
def kit_for_this_python() -> Iterator[Path]:
    """The kit built for the Python running the tests (the GPU machine's is 3.12: multiprocess has a wheel a
    version), so that scripts/gpu_check.py can install and use it here."""
    require_pypi()
    parent = Path(tempfile.mkdtemp(prefix=".test-gpu-kit-", dir=ROOT / "outputs"))
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    command = [sys.executable, str(SCRIPT), "--dest", str(parent / "gpu-kit"), "--python-version", here]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    yield parent / "gpu-kit"
    shutil.rmtree(parent)


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_path(kit_for_this_python: Path, tmp_path: Path) -> None:
    """scripts/gpu_check.py --cpu: the kit installs, the random model builds, gpu_smoke.py --cpu --no-vllm passes
    (no GPU steps); the verdicts, manifest and log land in --out."""
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--kit", str(kit_for_this_python),
               "--out", str(out), "--work", str(work), "--layers", "2", "--budget", "400"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    verdicts = (out / "verdicts.txt").read_text().splitlines()
    names = [line.split(":")[0] for line in verdicts]
    assert names == ["PASS install", "PASS versions", "SKIP nvidia_smi", "SKIP triton_kernel", "SKIP adamw_8bit_probe", "SKIP import_unsloth",
                     "PASS random_model", "PASS load", "PASS lora", "PASS sample", "PASS sft_step", "PASS optimizer",
                     "PASS precision", "PASS grpo_step", "PASS orpo_step", "PASS save", "PASS reload",
                     "PASS gpu_smoke"]  # fmt: skip
    assert "trl 1.14.2 (kit)" in verdicts[1] and "unsloth 2026.10.9 (kit)" in verdicts[1]
    assert "generating with generate" in result.stdout and "greedy tokens" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["exit_status"] == 0 and manifest["verdicts"] == verdicts and manifest["kit"]["wheels"]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "manifest.json", "verdicts.txt"]
