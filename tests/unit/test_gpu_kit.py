"""scripts/gpu_kit.py on synthetic wheels: what stripping drops, RECORD and entry points after it, pip's verdict,
the import scan, bitsandbytes' CUDA rule, the size limit, the git-ignored destination and a whole offline build.

No network. Run: `.venv/bin/python -m pytest tests/unit/test_gpu_kit.py`
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_kit.py"
SPEC = importlib.util.spec_from_file_location("gpu_kit", SCRIPT)
gpu_kit = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_kit)

PURE = "py3-none-any"
BNB_TAG = "py3-none-manylinux_2_24_x86_64"
BNB_LIBS = ("cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025")
UNSLOTH_FILES = {
    "unsloth/__init__.py": b"from .models import loader\nVERSION = 'studio is not imported'\n",
    "unsloth/models/__init__.py": b"",
    "unsloth/models/loader.py": b"import os\n\n\ndef main():\n    return 0\n",
    "studio/__init__.py": b"",
    "studio/frontend/dist/app.js": b"console.log(1)\n" * 100,
    "unsloth_cli/__init__.py": b"app = None\n",
}
UNSLOTH_ENTRY_POINTS = (
    "[console_scripts]\nunsloth = unsloth_cli:app\nunsloth-loader = unsloth.models.loader:main\n"
)


def sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes], tag: str = PURE,
               entry_points: str | None = None) -> Path:  # fmt: skip
    """A wheel pip installs: the files, METADATA, WHEEL, optional entry_points.txt and a RECORD of them all."""
    dist = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    purelib = "true" if tag == PURE else "false"
    contents[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n".encode()
    )
    if entry_points is not None:
        contents[f"{dist}/entry_points.txt"] = entry_points.encode()
    record = "".join(f"{path},sha256={sha(data)},{len(data)}\n" for path, data in contents.items())
    contents[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for member, data in contents.items():
            whl.writestr(member, data)
    return path


def bnb_wheel(folder: Path, libs: tuple[str, ...] = BNB_LIBS, version: str = "0.50.2") -> Path:
    files = {f"bitsandbytes/libbitsandbytes_{lib}.so": lib.encode() * 1000 for lib in libs}
    files["bitsandbytes/__init__.py"] = b"import torch\n"
    files["bitsandbytes/nested/libbitsandbytes_cuda118.so"] = b"not a top-level library: kept"
    return make_wheel(folder, "bitsandbytes", version, files, BNB_TAG)


def unsloth_wheel(folder: Path, extra: dict[str, bytes] | None = None, version: str = "2026.10.9") -> Path:
    return make_wheel(
        folder, "unsloth", version, UNSLOTH_FILES | (extra or {}), entry_points=UNSLOTH_ENTRY_POINTS
    )


def read(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        return whl.read(member)


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as whl:
        return set(whl.namelist())


# ---------------------------------------------------------------------------- stripping


def test_strip_drops_what_the_rule_says_and_copies_the_rest(tmp_path: Path) -> None:
    src, dest = unsloth_wheel(tmp_path), tmp_path / "out" / "unsloth-2026.10.9-py3-none-any.whl"
    dest.parent.mkdir()
    dropped = gpu_kit.strip_unsloth(src, dest)
    assert set(dropped) == {n for n in UNSLOTH_FILES if n.startswith(("studio/", "unsloth_cli/"))}
    assert names(dest) == names(src) - set(dropped)
    changed = {"unsloth-2026.10.9.dist-info/RECORD", "unsloth-2026.10.9.dist-info/entry_points.txt"}
    for member in names(dest) - changed:
        assert read(dest, member) == read(src, member), member
    with zipfile.ZipFile(dest) as whl:
        assert {i.compress_type for i in whl.infolist()} == {zipfile.ZIP_DEFLATED}


def test_record_loses_the_dropped_lines_only(tmp_path: Path) -> None:
    src, dest = unsloth_wheel(tmp_path), tmp_path / "stripped.whl"
    dropped = gpu_kit.strip_unsloth(src, dest)
    record = "unsloth-2026.10.9.dist-info/RECORD"
    before, after = read(src, record).decode().splitlines(), read(dest, record).decode().splitlines()
    entry_points = "unsloth-2026.10.9.dist-info/entry_points.txt"
    assert [line for line in after if not line.startswith(entry_points)] == [
        line for line in before if line.split(",")[0] not in dropped and not line.startswith(entry_points)
    ]
    new = read(dest, entry_points)
    assert f"{entry_points},sha256={sha(new)},{len(new)}" in after  # the rewritten file's own hash


def test_entry_points_into_dropped_packages_go(tmp_path: Path) -> None:
    dest = tmp_path / "stripped.whl"
    gpu_kit.strip_unsloth(unsloth_wheel(tmp_path), dest)
    kept = read(dest, "unsloth-2026.10.9.dist-info/entry_points.txt").decode()
    assert kept == "[console_scripts]\nunsloth-loader = unsloth.models.loader:main\n"


def test_a_section_left_without_entries_goes_with_them() -> None:
    text = "[console_scripts]\nunsloth = unsloth_cli:app\n\n[other]\nx = keep.me:f\n"
    assert gpu_kit.drop_entry_points(text, {"unsloth_cli/__init__.py"}) == "[other]\nx = keep.me:f\n"
    assert (
        gpu_kit.drop_entry_points(text, {"keep/me.py"}) == "[console_scripts]\nunsloth = unsloth_cli:app\n\n"
    )


def test_pip_installs_the_stripped_wheel_without_the_dropped_command(tmp_path: Path) -> None:
    dest = tmp_path / "wheels" / "unsloth-2026.10.9-py3-none-any.whl"
    dest.parent.mkdir()
    gpu_kit.strip_unsloth(unsloth_wheel(tmp_path), dest)
    target = tmp_path / "target"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--no-index", "--no-deps", "--no-compile",
               "--target", str(target), str(dest)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (target / "unsloth" / "models" / "loader.py").is_file()
    assert not (target / "studio").exists() and not (target / "unsloth_cli").exists()
    assert (target / "bin" / "unsloth-loader").is_file() and not (target / "bin" / "unsloth").exists()


def test_check_install_passes_a_good_kit_and_names_pips_complaint(tmp_path: Path) -> None:
    out = tmp_path / "wheels"
    out.mkdir()
    unsloth, bnb = unsloth_wheel(tmp_path), bnb_wheel(tmp_path)
    stripped = {
        out / unsloth.name: gpu_kit.strip_unsloth(unsloth, out / unsloth.name),
        out / bnb.name: gpu_kit.strip_bitsandbytes(bnb, out / bnb.name, "130"),
    }
    gpu_kit.check_install(sorted(stripped), stripped, "3.12")
    broken = out / "broken-1.0-py3-none-any.whl"
    with zipfile.ZipFile(broken, "w") as whl:
        whl.writestr("broken/__init__.py", "")  # no dist-info: not a wheel pip accepts
    with pytest.raises(gpu_kit.KitError, match="pip would not install"):
        gpu_kit.check_install([broken], {}, "3.12")


# ---------------------------------------------------------------------------- the rules' own checks


@pytest.mark.parametrize(
    "planted",
    [
        "import studio.backend\n",
        "from unsloth_cli import app\n",
        "import importlib\nimportlib.import_module('studio.x')\n",
    ],
)
def test_the_unsloth_scan_raises_on_a_planted_import(tmp_path: Path, planted: str) -> None:
    src = unsloth_wheel(tmp_path, {"unsloth/models/planted.py": planted.encode()})
    with pytest.raises(
        gpu_kit.KitError, match=r"unsloth/models/planted.py, line \d, imports (studio|unsloth_cli)"
    ):
        gpu_kit.strip_unsloth(src, tmp_path / "stripped.whl")


def test_the_unsloth_scan_ignores_mentions_and_relative_imports(tmp_path: Path) -> None:
    planted = b"from . import studio  # unsloth.studio\nPATH = 'studio/backend/vendor'\n"
    src = unsloth_wheel(tmp_path, {"unsloth/models/mentions.py": planted})
    assert gpu_kit.strip_unsloth(src, tmp_path / "stripped.whl")


def test_bitsandbytes_keeps_exactly_the_cuda_and_cpu_libraries(tmp_path: Path) -> None:
    src, dest = bnb_wheel(tmp_path), tmp_path / "stripped.whl"
    dropped = gpu_kit.strip_bitsandbytes(src, dest, "130")
    libs = {n for n in names(dest) if n.endswith(".so")}
    assert libs == {
        "bitsandbytes/libbitsandbytes_cuda130.so",
        "bitsandbytes/libbitsandbytes_cpu.so",
        "bitsandbytes/nested/libbitsandbytes_cuda118.so",
    }
    assert sorted(dropped) == sorted(
        f"bitsandbytes/libbitsandbytes_{lib}.so" for lib in BNB_LIBS if lib not in ("cpu", "cuda130")
    )


def test_bitsandbytes_without_the_cuda_library_is_refused(tmp_path: Path) -> None:
    src = bnb_wheel(tmp_path, ("cpu", "cuda128"))
    with pytest.raises(gpu_kit.KitError, match="no libbitsandbytes_cuda130.so .*libbitsandbytes_cuda128.so"):
        gpu_kit.strip_bitsandbytes(src, tmp_path / "stripped.whl", "130")
    assert not (tmp_path / "stripped.whl").exists()


# ---------------------------------------------------------------------------- size, destination, versions


def test_the_size_check_names_both_sizes_and_the_largest_files(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "big.whl").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / "small.json").write_text("{}")
    assert gpu_kit.check_size(tmp_path, repo=2**20, limit=5 * 2**20) == 3 * 2**20 + 2
    with pytest.raises(
        gpu_kit.KitError, match=r"kit \(3\.0 MiB\) and the repository \(2\.0 MiB\).*big\.whl 3\.0"
    ):
        gpu_kit.check_size(tmp_path, repo=2 * 2**20, limit=5 * 2**20)


def test_the_repository_counts_what_git_sends() -> None:
    size = gpu_kit.repo_bytes()
    assert (ROOT / "scripts" / "gpu_kit.py").stat().st_size < size < gpu_kit.LIMIT


@pytest.mark.parametrize("dest", ["scripts/kit", "helpers", "."])
def test_a_destination_git_does_not_ignore_is_refused(dest: str) -> None:
    with pytest.raises(gpu_kit.KitError, match="not ignored by git"):
        gpu_kit.check_ignored(ROOT / dest)


def test_destinations_under_outputs_pass_and_outside_ones_are_refused(tmp_path: Path) -> None:
    gpu_kit.check_ignored(ROOT / "outputs" / "gpu-kit")
    with pytest.raises(gpu_kit.KitError, match="outside the repository"):
        gpu_kit.check_ignored(tmp_path / "kit")


def test_a_missing_pin_is_named(tmp_path: Path) -> None:
    pins = tmp_path / "requirements-gpu.txt"
    pins.write_text("unsloth==2026.10.9\nunsloth_zoo==2026.10.9\n")
    with pytest.raises(gpu_kit.KitError, match="pins no version of trl"):
        gpu_kit.versions(pins)


def test_unpinned_packages_take_this_environments_version() -> None:
    found = gpu_kit.versions()
    assert found.keys() == gpu_kit.PACKAGES.keys()
    for name in ("dill", "multiprocess", "fsspec"):
        assert found[name] == importlib.metadata.version(name)


def test_the_cache_serves_the_best_wheel_for_the_target(tmp_path: Path) -> None:
    def found(python_version: str) -> str | None:
        path = gpu_kit.cached_wheel(tmp_path, "multiprocess", "0.70.19", gpu_kit.target_tags(python_version))
        return path and path.name

    for tag in ("py311-none-any", "py312-none-any", "cp312-cp312-win_amd64"):
        (tmp_path / f"multiprocess-0.70.19-{tag}.whl").touch()
    assert found("3.12") == "multiprocess-0.70.19-py312-none-any.whl"  # pip's choice over py311
    assert found("3.11") == "multiprocess-0.70.19-py311-none-any.whl"
    (tmp_path / "multiprocess-0.70.19-py311-none-any.whl").unlink()
    assert found("3.11") is None  # a py312 wheel is no use to Python 3.11, a Windows one to none
    (tmp_path / "unsloth_zoo-2026.10.9-py3-none-any.whl").touch()  # the name as wheels spell it
    assert gpu_kit.cached_wheel(tmp_path, "unsloth_zoo", "2026.10.9", gpu_kit.target_tags("3.12")) is not None


# ---------------------------------------------------------------------------- whole builds, offline


@pytest.fixture
def offline_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """(wheel cache, tokenizer dir): a synthetic wheel of every package at its real version, and a tokenizer."""
    cache, tokenizer = tmp_path / "cache", tmp_path / "tokenizer"
    cache.mkdir(), tokenizer.mkdir()
    found = gpu_kit.versions()
    unsloth_wheel(cache, version=found["unsloth"])
    bnb_wheel(cache, version=found["bitsandbytes"])
    for name in found.keys() - {"unsloth", "bitsandbytes"}:
        make_wheel(cache, name, found[name], {f"{name}/__init__.py": b""})
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        (tokenizer / name).write_text("{}")
    return cache, tokenizer


def test_a_build_writes_the_kit_and_its_manifest(offline_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    cache, tokenizer = offline_inputs
    dest = tmp_path / "kit"
    kit = gpu_kit.build_kit(dest, cache=cache, tokenizer=tokenizer, require_ignored=False)
    assert json.loads((dest / "kit.json").read_text()) == kit
    assert sorted(os.listdir(dest / "tokenizer")) == kit["tokenizer"] == ["config.json", "tokenizer.json"]
    assert {w["file"] for w in kit["wheels"]} == set(os.listdir(dest / "wheels"))
    assert len(kit["wheels"]) == len(gpu_kit.PACKAGES)
    for wheel in kit["wheels"]:
        data = (dest / "wheels" / wheel["file"]).read_bytes()
        assert wheel["sha256"] == hashlib.sha256(data).hexdigest() and wheel["bytes"] == len(data)
    assert kit["send"] == [str(dest)] and kit["limit_bytes"] == gpu_kit.LIMIT
    lines = gpu_kit.summary(kit).splitlines()
    assert lines[-3:] == [
        "On the GPU machine (no internet), from the repository root:",
        f"  python3 scripts/gpu_check.py --kit {dest} --out outputs/gpu-check",
        f"Send {dest} with the repository: it is git-ignored, so copy it by name.",
    ]


def test_a_failed_build_leaves_the_old_kit_whole(offline_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    cache, tokenizer = offline_inputs
    dest = tmp_path / "kit"
    before = gpu_kit.build_kit(dest, cache=cache, tokenizer=tokenizer, require_ignored=False)
    with pytest.raises(gpu_kit.KitError, match="come to"):
        gpu_kit.build_kit(dest, cache=cache, tokenizer=tokenizer, require_ignored=False, limit=2**20)
    assert json.loads((dest / "kit.json").read_text()) == before
    assert sorted(os.listdir(tmp_path)) == ["cache", "kit", "tokenizer"]  # no temporary left beside it


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_the_cli_refuses_a_destination_git_would_send() -> None:
    result = run_cli("--dest", "scripts/kit")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.startswith("error: scripts/kit is not ignored by git")
        and result.stderr.count("\n") == 1
    )
    assert not (ROOT / "scripts" / "kit").exists()


def test_the_cli_says_how_to_fix_a_failed_download(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "GSM8K_RL_CACHE": str(tmp_path)}  # offline
    result = run_cli("--dest", "outputs/.test-gpu-kit-offline", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        result.stderr.startswith("error: pip download of unsloth==")
        and "connect to the internet" in result.stderr
    )
    assert result.stderr.count("\n") == 1 and not (ROOT / "outputs" / ".test-gpu-kit-offline").exists()
