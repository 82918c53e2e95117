"""The real GPU kit (scripts/gpu_kit.py): built once into a git-ignored folder under outputs/, then checked: it fits
beside the repository, Unsloth and bitsandbytes are stripped as the rules say, pip installs every wheel and
kit.json matches the files.

Needs PyPI for the wheels the cache lacks (skips with the reason when it cannot be reached); about 15 s with a
warm cache. Run: `.venv/bin/python -m pytest tests/e2e/test_gpu_kit_build.py`
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypi import require_pypi

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_kit.py"
LIMIT = 60 * 2**20


def build_kit(*options: str) -> tuple[Path, str]:
    """The kit built by the CLI into a fresh folder under outputs/ (git-ignored, as the script demands), and what
    the CLI printed."""
    require_pypi("the kit's wheels cannot be downloaded")
    dest = Path(tempfile.mkdtemp(prefix=".test-gpu-kit-", dir=ROOT / "outputs")) / "gpu-kit"
    command = [sys.executable, str(SCRIPT), "--dest", str(dest), *options]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return dest, result.stdout


@pytest.fixture(scope="module")
def kit() -> Iterator[Path]:
    """The kit as `make gpu-kit` builds it, for the GPU machine's Python."""
    dest, printed = build_kit()
    relative = dest.relative_to(ROOT)
    assert printed.splitlines()[-3:] == [
        "On the GPU machine (no internet), from the repository root:",
        f"  python3 scripts/gpu_check.py --kit {relative} --out outputs/gpu-check",
        f"Send {relative} with the repository: it is git-ignored, so copy it by name.",
    ]
    yield dest
    shutil.rmtree(dest.parent)


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
    dest, _ = build_kit("--python-version", f"{sys.version_info.major}.{sys.version_info.minor}")
    yield dest
    shutil.rmtree(dest.parent)


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


# The GPU machine's Python packages by import name (its image's package list, read 2026-11-17; torch 2.11.0+cu130,
# transformers 5.17.0), the ones the walk below can meet.
MACHINE = {"torch", "transformers", "accelerate", "peft", "triton", "numpy", "pandas", "matplotlib", "packaging",
           "psutil", "requests", "regex", "filelock", "PIL", "sentencepiece", "google", "tokenizers", "safetensors",
           "huggingface_hub", "pyarrow", "xxhash", "fsspec", "yaml", "tqdm", "rich", "typer", "einops", "jinja2",
           "httpx", "aiohttp", "sympy", "scipy", "typing_extensions"}  # fmt: skip


# unsloth_zoo.mlx needs MLX, which Unsloth imports only on Apple Silicon (unsloth/__init__.py, a find_spec("mlx")).
APPLE_ONLY = {"mlx"}


def module_file(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imports_on_import(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(import, guarded) for the imports that can run when the module is imported: module level and inside `with`,
    `if` and `try` blocks; guarded inside an `if` (`if is_x_available(): import x`) or a `try`."""
    nodes = [(node, False) for node in tree.body]
    while nodes:
        node, guarded = nodes.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, guarded
        elif isinstance(node, ast.With):
            nodes += [(n, guarded) for n in node.body]
        elif isinstance(node, ast.If):
            nodes += [(n, True) for n in node.body + node.orelse]
        elif isinstance(node, ast.Try):
            nodes += [(n, True) for n in node.body + [n for h in node.handlers for n in h.body]]
            nodes += [(n, guarded) for n in node.orelse + node.finalbody]


def imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


@pytest.mark.slow
def test_what_import_unsloth_runs_needs_only_the_kit_and_the_machine(kit: Path, tmp_path: Path) -> None:
    """Walk the modules `import unsloth` can import, through every package of the kit: each package outside the kit
    that one of them imports unguarded (not in a `try` or an `if`) is on the GPU machine or in the standard library.
    Read from the source, as the kit's wheels hold it; `import unsloth` itself needs a GPU."""
    for whl in (kit / "wheels").glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp_path)
    in_kit = {
        p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".data"))
    }
    todo, seen, outside = ["unsloth"], set(), {}
    while todo:
        module = todo.pop()
        path = module_file(tmp_path, module)
        if module in seen or path is None:
            continue
        seen.add(module)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, guarded in imports_on_import(ast.parse(path.read_bytes())):
            for name in imported_names(node, package):
                top = name.split(".")[0]
                if top in in_kit:
                    todo.append(name)
                elif not guarded and top not in sys.stdlib_module_names and top != "__main__":
                    outside.setdefault(top, module)
    assert len(seen) > 100, f"walked only {sorted(seen)}"
    missing = {top: by for top, by in outside.items() if top not in MACHINE | APPLE_ONLY}
    assert not missing, (
        f"imported when unsloth is imported, on neither the GPU machine nor in the kit: {missing}"
    )
