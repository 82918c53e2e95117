"""The GPU check for a machine without internet: install the kit, record the machine, run Unsloth's training path.

Build the kit on a machine with PyPI (`python scripts/gpu_kit.py`), send the repository and the kit, then on the
GPU machine, from the repository root, with the Python that has a CUDA torch:
    python3 scripts/gpu_check.py --kit outputs/gpu-kit --out outputs/gpu-check
Within `--budget` seconds (default 420) it installs the kit's wheels into a folder of its own (pip --no-index
--no-deps --target), records nvidia-smi and the library versions, compiles one Triton kernel (Unsloth's kernels
need a C compiler there), probes one 8-bit AdamW step, times `import unsloth`, builds a random-weight model of the
kit's config (SmolLM2's: Llama's architecture) with the kit's tokenizer, and runs `scripts/gpu_smoke.py --no-vllm`
on it. Every step prints
`PASS|FAIL|SKIP <check>: <detail>`, and gpu_smoke.py's lines are passed on. --out gets four files: verdicts.txt
(every verdict line), manifest.json (versions, GPU, times, kit), nvidia-smi.txt and log.txt (every step's output).
Not covered, since vLLM cannot travel: sampling, the adapter as a LoRA request, and GRPO generating through vLLM.
`--cpu` runs the same on the CPU (CI does: the kit installs, the model builds, gpu_smoke.py --cpu --no-vllm).
Exit status 1 when a check failed. Standard library only: the kit is not installed when this starts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from checklist import VERDICTS, Checks

ROOT = Path(__file__).resolve().parents[1]
WORK_MARK = ".gsm8k-gpu-check"  # marks a --work folder as this script's, which it may delete
# What the versions line reports; `kit` marks those imported from the kit rather than the machine.
LIBRARIES = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "unsloth", "unsloth_zoo",
             "bitsandbytes", "triton", "huggingface_hub", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow",
             "fsspec", "dill", "multiprocess")  # fmt: skip
# No hub, no statistics download (Unsloth fetches a file otherwise), no telemetry, output as it comes.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "UNSLOTH_DISABLE_STATISTICS": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}  # fmt: skip
VERSIONS = """
import importlib.metadata as md, json, sys, torch
site = sys.argv[1]
def where(name):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    return dist.version + (" (kit)" if str(dist.locate_file("")).startswith(site) else "")
gpu = torch.cuda.is_available()
print("RESULT", json.dumps({
    "python": sys.version.split()[0], "torch_cuda": torch.version.cuda,
    "gpu": torch.cuda.get_device_name() if gpu else None,
    "capability": ".".join(map(str, torch.cuda.get_device_capability())) if gpu else None,
    "libraries": {name: where(name) for name in sys.argv[2:]},
}))
"""
ADAMW_8BIT = """
import json, torch, bitsandbytes as bnb
torch.manual_seed(0)
layer = torch.nn.Linear(256, 256, device="cuda")
opt = bnb.optim.AdamW8bit(layer.parameters(), lr=1e-2)
before = layer.weight.detach().clone()
layer(torch.randn(8, 256, device="cuda")).pow(2).mean().backward()
opt.step()
state = {k: str(v.dtype) for k, v in opt.state[layer.weight].items() if torch.is_tensor(v) and v.dim()}
print("RESULT", json.dumps({"moved": float((layer.weight - before).abs().max()), "state": state}))
"""
# Triton compiles a C launcher on first use: without a C compiler and Python's headers every Unsloth kernel fails.
# A file, not `-c`: triton.jit reads the kernel's source.
TRITON_KERNEL = """
import shutil, torch, triton, triton.language as tl
@triton.jit
def double(x, out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + i, 2 * tl.load(x + i, mask=i < n), mask=i < n)
x = torch.arange(1000, device="cuda", dtype=torch.float32)
out = torch.empty_like(x)
double[(4,)](x, out, 1000, BLOCK=256)
assert torch.equal(out, 2 * x), "wrong result"
print(f"RESULT triton {triton.__version__} compiled and ran a kernel (C compiler: {shutil.which('cc') or shutil.which('gcc')})")
"""
RESULT = "RESULT "  # what a step's code prints before its result
IMPORT_UNSLOTH = (
    "import time; t = time.perf_counter(); import unsloth; print(f'RESULT {time.perf_counter() - t:.1f}')"
)


class Session:
    """The check's folders, environment, deadline and log: every subprocess runs through `call`."""

    def __init__(self, kit: Path, out: Path, work: Path, budget: float) -> None:
        self.kit, self.out, self.work, self.site = kit, out, work, work / "site"
        self.deadline = time.monotonic() + budget
        self.log = (out / "log.txt").open("w")
        path = os.pathsep.join(p for p in (str(self.site), str(ROOT), os.environ.get("PYTHONPATH")) if p)
        cache = {"GSM8K_RL_CACHE": str(work / "cache"), "HF_HOME": str(work / "hf")}
        self.env = {**os.environ, **OFFLINE, **cache, "PYTHONPATH": path}
        self.facts: dict[str, Any] = {}
        self.output = ""  # the last call's, also when it failed

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def call(
        self, args: list[str], limit: float, echo: bool = False, env: dict[str, str] | None = None
    ) -> str:
        """Run `args` in the work folder with the kit's environment (and `env`); its output (logged; printed with
        `echo`). Killed at `limit` seconds or at the end of the budget, whichever comes first; raises when it fails.
        """
        self.output = ""
        timeout = min(limit, self.left())
        cut_by = "its limit" if timeout == limit else "the end of the budget"
        if timeout < 5:
            raise TimeoutError(f"only {self.left():.0f} s of the budget are left, too few to start it")
        self.log.write(f"$ {' '.join(args)}\n")
        proc = subprocess.Popen(args, cwd=self.work, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)  # fmt: skip
        killed = threading.Event()

        def stop() -> None:  # the whole process group: workers it started would keep the pipe open
            if proc.poll() is None:
                killed.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        lines: list[str] = []
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                self.log.write(line)
                if echo:
                    print(line, end="", flush=True)
            proc.wait()
        finally:
            watchdog.cancel()
            self.log.flush()
            self.output = "".join(lines)
        if killed.is_set():
            raise TimeoutError(f"stopped at {cut_by}, after {timeout:.0f} s")
        if proc.returncode:
            raise RuntimeError(f"exit status {proc.returncode}: {_last_error(lines)}")
        return self.output

    def python(self, code: str, *args: str, limit: float = 120) -> str:
        """Run `code` from a file in the work folder (tracebacks then show the lines); the text it printed after
        `RESULT ` (other lines, a library's warnings, are only logged)."""
        script = self.work / f"step-{len(list(self.work.glob('step-*.py')))}.py"
        script.write_text(code)
        output = self.call([sys.executable, str(script), *args], limit)
        results = [line.removeprefix(RESULT) for line in output.splitlines() if line.startswith(RESULT)]
        if not results:
            raise RuntimeError(
                f"it printed no {RESULT.strip()} line; its last line: {_last_error(output.splitlines())}"
            )
        return results[-1]


def _last_error(lines: list[str]) -> str:
    """The last line that looks like an exception, for the one-line verdict."""
    errors = [line.strip() for line in lines if "Error" in line or "Exception" in line]
    return errors[-1] if errors else (lines[-1].strip() if lines else "no output")


def install(s: Session) -> str:
    wheels = sorted((s.kit / "wheels").glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"No wheels in {s.kit / 'wheels'}: build the kit with python scripts/gpu_kit.py."
        )
    listed = {w["file"]: w["sha256"] for w in json.loads((s.kit / "kit.json").read_text()).get("wheels", [])}
    damaged = [w.name for w in wheels if hashlib.sha256(w.read_bytes()).hexdigest() != listed.get(w.name)]
    if damaged:
        raise ValueError(
            f"{', '.join(damaged)} differ from kit.json (cut off in transfer?): send the kit again."
        )
    s.call([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--disable-pip-version-check", "-q", "--target", str(s.site), *map(str, wheels)], limit=180)  # fmt: skip
    size = sum(w.stat().st_size for w in wheels) / 2**20
    return f"{len(wheels)} wheels ({size:.1f} MB) into {s.site}"


def nvidia_smi(s: Session) -> str:
    if shutil.which("nvidia-smi") is None:
        raise FileNotFoundError("no nvidia-smi on PATH")
    (s.out / "nvidia-smi.txt").write_text(s.call(["nvidia-smi"], limit=30))
    query = "--query-gpu=name,driver_version,memory.total,compute_cap"
    s.facts["nvidia_smi"] = s.call(["nvidia-smi", query, "--format=csv,noheader"], limit=30).strip()
    return s.facts["nvidia_smi"]


def versions(s: Session) -> str:
    found = json.loads(s.python(VERSIONS, str(s.site), *LIBRARIES))
    s.facts["versions"] = found
    libraries = ", ".join(f"{k} {v}" for k, v in found["libraries"].items() if v)
    missing = [k for k, v in found["libraries"].items() if not v]
    gpu = f"{found['gpu']} (compute capability {found['capability']})" if found["gpu"] else "no GPU"
    return (f"Python {found['python']}, CUDA {found['torch_cuda']}, {gpu}; {libraries}"
            + (f"; not installed: {', '.join(missing)}" if missing else ""))  # fmt: skip


def adamw_8bit(s: Session) -> str:
    found = json.loads(s.python(ADAMW_8BIT))
    if not found["moved"] or "torch.uint8" not in found["state"].values():
        raise RuntimeError(f"one step of bitsandbytes' AdamW8bit gave {found}")
    return f"one step moved the weights by up to {found['moved']:.2g}; state {found['state']}"


def triton_kernel(s: Session) -> str:
    return s.python(TRITON_KERNEL, limit=180)


def import_unsloth(s: Session) -> str:
    seconds = s.python(IMPORT_UNSLOTH, limit=240)
    s.facts["import_unsloth_s"] = float(seconds)
    return f"{seconds} s"


def random_model(s: Session, layers: int | None) -> str:
    target = s.work / "smollm2-random"  # not ending in -bf16 or -bnb-4bit (helpers.random_model)
    args = ["-m", "helpers.random_model", "--config-dir", str(s.kit / "tokenizer"), "--out", str(target)]
    # Built on the CPU, with CUDA hidden: importing helpers on CUDA would import Unsloth a third time
    s.call([sys.executable, *args, *(["--layers", str(layers)] if layers else [])], limit=180,
           env={"CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    return f"{target} ({size:.0f} MB)"


def gpu_smoke(s: Session, checks: Checks, cpu: bool) -> str:
    """scripts/gpu_smoke.py --no-vllm on the random model; its verdict lines join this script's."""
    args = [sys.executable, str(ROOT / "scripts" / "gpu_smoke.py"), "--no-vllm", "--problems", "2",
            "--model", str(s.work / "smollm2-random"), "--out", str(s.work / "smoke"), *(["--cpu"] if cpu else [])]  # fmt: skip
    try:
        s.call(args, limit=s.left() - 10, echo=True)
    finally:
        checks.lines += [line for line in s.output.splitlines() if line.split(" ")[0] in VERDICTS]
    return s.output.strip().splitlines()[-1]


def write_results(s: Session, checks: Checks, started: float, status: int) -> None:
    """verdicts.txt and manifest.json in --out (log.txt and nvidia-smi.txt are written as they come)."""
    (s.out / "verdicts.txt").write_text("\n".join(checks.lines) + "\n")
    kit = s.kit / "kit.json"
    manifest = {
        **s.facts,
        "verdicts": checks.lines,
        "exit_status": status,
        "wall_s": round(time.monotonic() - started, 1),
        "kit": json.loads(kit.read_text()) if kit.is_file() else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (s.out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kit", type=Path, default=ROOT / "outputs" / "gpu-kit", help="the kit folder")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu-check", help="where results go")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gsm8k-gpu-check"),
                        help="scratch folder, deleted first (only an empty one or one of this script's)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=420, help="seconds for everything")
    parser.add_argument("--layers", type=int, help="layers of the random model (default: the config's)")
    parser.add_argument("--cpu", action="store_true", help="the same on the CPU path (no GPU steps)")
    args = parser.parse_args(argv)
    if not (args.kit / "kit.json").is_file():
        print(f"error: {args.kit} is not a kit (no kit.json): build it with python scripts/gpu_kit.py, and send it "
              "with the repository.", file=sys.stderr)  # fmt: skip
        return 2
    if args.work.exists() and any(args.work.iterdir()) and not (args.work / WORK_MARK).exists():
        print(f"error: --work {args.work} holds files this script did not write, and it deletes that folder first: "
              "name an empty or new one.", file=sys.stderr)  # fmt: skip
        return 2
    started = time.monotonic()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    (args.work / WORK_MARK).touch()
    args.out.mkdir(parents=True, exist_ok=True)
    s, checks = Session(args.kit.resolve(), args.out.resolve(), args.work.resolve(), args.budget), Checks()
    checks.run("install", lambda: install(s))
    checks.run("versions", lambda: versions(s), ("install",))
    if args.cpu:
        for name in ("nvidia_smi", "triton_kernel", "adamw_8bit_probe", "import_unsloth"):
            checks.skip(name, "needs CUDA (--cpu)")
    else:
        checks.run("nvidia_smi", lambda: nvidia_smi(s))
        checks.run("triton_kernel", lambda: triton_kernel(s))
        checks.run("adamw_8bit_probe", lambda: adamw_8bit(s), ("install",))
        checks.run("import_unsloth", lambda: import_unsloth(s), ("install",))
    checks.run("random_model", lambda: random_model(s, args.layers), ("install",))
    checks.run("gpu_smoke", lambda: gpu_smoke(s, checks, args.cpu), ("random_model",))
    status = checks.verdict()
    write_results(s, checks, started, status)
    s.log.close()
    print(f"wall time {time.monotonic() - started:.0f} s of a {args.budget:.0f} s budget; results in {s.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
