"""The local judge server's command line and start-up checks: `pytest tests/unit/test_judge_server.py`.

The server itself runs in `tests/e2e/test_local_judge.py`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import accelerator, judge_server
from helpers import endpoint as api

DEAD = api.Endpoint(url="http://127.0.0.1:9/v1", model="m", key=None, timeout=1)  # nothing listens there


def test_on_a_cpu_the_server_runs_eagerly_on_loopback_in_the_cpus_dtype(monkeypatch) -> None:
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, "float32")
    command = judge_server.serve_command("/models/smollm2", 8123)
    assert command[command.index("--dtype") + 1] == "float32"
    assert command[:3] == [sys.executable, "-m", judge_server.SERVER_MODULE]
    assert (
        command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "8123"
    )
    assert command[command.index("--served-model-name") + 1] == "smollm2"  # the folder's name
    assert "--enforce-eager" in command and "--gpu-memory-utilization" not in command


def test_on_a_gpu_the_server_takes_its_share_of_the_card() -> None:
    command = judge_server.serve_command("Qwen/Qwen2.5-7B-Instruct", 8001, gpu_memory_utilization=0.3)
    assert (
        command[command.index("--gpu-memory-utilization") + 1] == "0.3" and "--enforce-eager" not in command
    )


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5, -0.2])  # none of the card, all of it, more, negative
def test_a_gpu_share_outside_0_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="gpu_memory_utilization must be in"):
        judge_server.serve_command("m", 8001, gpu_memory_utilization=share)


def test_a_server_that_dies_at_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('CUDA out of memory'); raise SystemExit(3)"], stdout=out
        )
    with pytest.raises(RuntimeError, match=r"exited with code 3\. Its log ends:\nCUDA out of memory"):
        judge_server.wait_ready(DEAD, process, log, timeout=30)


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(TimeoutError, match="did not list m at http://127.0.0.1:9/v1 within 2 s"):
            judge_server.wait_ready(DEAD, process, tmp_path / "log", timeout=2)
    finally:
        process.kill()


def test_stop_ends_the_whole_process_group_even_after_the_server_died(tmp_path: Path) -> None:
    # a stand-in server that starts an "engine" child, writes its pid, then dies, leaving the child behind
    script = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(child.pid))"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    process.wait(30)
    child = int((tmp_path / "child").read_text())
    judge_server.Server(process, tmp_path / "log", {}).stop()
    for _ in range(50):  # the engine child is gone (killed, then reaped by init)
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the engine child outlived stop()")
