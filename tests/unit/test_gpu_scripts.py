"""The GPU scripts' own logic, on the CPU: verdict lines, the checks that judge what CUDA would give, and the GPU
check's time limits. (The scripts run end to end in tests/e2e/test_gpu_smoke_cpu.py and tests/e2e/test_gpu_kit_build.py.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the scripts import their neighbours as `python scripts/x.py` would

import checklist  # noqa: E402
import gpu_check  # noqa: E402
import gpu_smoke  # noqa: E402


def test_a_skip_is_not_a_failure_but_a_failed_prerequisite_skips(capsys: pytest.CaptureFixture) -> None:
    checks = checklist.Checks()
    checks.run("load", lambda: "ok")
    checks.skip("sample", "needs vLLM")
    checks.run("train", lambda: 1 / 0)
    checks.run("save", lambda: "saved", ("train",))
    assert checks.verdict() == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [
        "SKIP sample: needs vLLM",
        "FAIL train: ZeroDivisionError: division by zero",
        "SKIP save: needs train",
    ]
    assert out[-1] == "verdict: 1 passed, 2 skipped, 1 failed; failed: train" and checks.lines == out[:-1]
    only_skipped = checklist.Checks()
    only_skipped.skip("seeds", "needs vLLM")
    assert only_skipped.verdict() == 0


def trainer_with(optimizer: torch.optim.Optimizer) -> SimpleNamespace:
    return SimpleNamespace(optimizer=SimpleNamespace(optimizer=optimizer))  # accelerate's wrapper


def test_the_optimizer_check_wants_8_bit_state_on_cuda() -> None:
    layer = torch.nn.Linear(4, 4)
    adamw = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(1, 4)).sum().backward()
    adamw.step()
    found = gpu_smoke.optimizer(trainer_with(adamw), on_cuda=False)
    assert found == "torch.optim.adamw.AdamW, 8-bit state for 0 of 2 trained tensors"  # weight and bias
    with pytest.raises(RuntimeError, match="AdamW with 8-bit state for 0 tensors: adamw_8bit was asked for"):
        gpu_smoke.optimizer(trainer_with(adamw), on_cuda=True)


def test_the_precision_check_compares_arguments_and_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(4, 2))
    model.get_input_embeddings = lambda: model[0]
    assert gpu_smoke.precision(model, SimpleNamespace(bf16=False, fp16=False)).startswith("CPU: fp32")
    with pytest.raises(
        RuntimeError, match="CPU should give fp32; trainer arguments say bf16, weights are fp32"
    ):
        gpu_smoke.precision(model, SimpleNamespace(bf16=True, fp16=False))
    with pytest.raises(RuntimeError, match="weights are bf16"):
        gpu_smoke.precision(model.to(torch.bfloat16), SimpleNamespace(bf16=False, fp16=False))


def test_on_cuda_the_trainer_must_be_unsloths(monkeypatch: pytest.MonkeyPatch) -> None:
    class SFTTrainer: ...

    class UnslothSFTTrainer: ...

    assert gpu_smoke.trainer_class(SFTTrainer(), on_cuda=False) == "SFTTrainer"
    assert gpu_smoke.trainer_class(UnslothSFTTrainer(), on_cuda=True) == "UnslothSFTTrainer"
    with pytest.raises(RuntimeError, match="SFTTrainer is TRL's own class"):
        gpu_smoke.trainer_class(SFTTrainer(), on_cuda=True)


def test_the_import_order_check_reads_the_order_of_sys_modules() -> None:
    ordered = dict.fromkeys(["torch", "unsloth", "trl", "transformers", "peft"])
    assert gpu_smoke.import_order(ordered) == "unsloth before trl, transformers, peft"
    with pytest.raises(RuntimeError, match="transformers imported before Unsloth"):
        gpu_smoke.import_order(dict.fromkeys(["transformers", "unsloth", "trl"]))
    with pytest.raises(RuntimeError, match="Unsloth was not imported on CUDA"):
        gpu_smoke.import_order(dict.fromkeys(["trl"]))


@pytest.fixture
def session(tmp_path: Path) -> gpu_check.Session:
    (tmp_path / "out").mkdir()
    (tmp_path / "work").mkdir()
    return gpu_check.Session(tmp_path / "kit", tmp_path / "out", tmp_path / "work", budget=60)


def test_a_step_is_stopped_at_its_limit_with_what_it_printed(session: gpu_check.Session) -> None:
    start = time.monotonic()
    code = "import time; print('started', flush=True); time.sleep(60)"
    with pytest.raises(TimeoutError, match="stopped at its limit, after 5 s"):
        session.call([sys.executable, "-c", code], limit=5)
    assert time.monotonic() - start < 20 and session.output == "started\n"
    assert "started" in (session.out / "log.txt").read_text()


def test_a_failing_step_names_its_error_and_the_budget_is_kept(session: gpu_check.Session) -> None:
    with pytest.raises(
        RuntimeError, match="exit status 1: ModuleNotFoundError: No module named 'no_such_lib'"
    ):
        session.python("import no_such_lib")
    assert session.python("print('a warning'); print('RESULT 4.2')") == "4.2"
    with pytest.raises(RuntimeError, match="it printed no RESULT line; its last line: a warning"):
        session.python("print('a warning')")
    session.deadline = time.monotonic() + 3
    with pytest.raises(TimeoutError, match="too few to start it"):
        session.python("print(1)")
    assert session.output == ""  # not the last step's


def test_without_a_kit_it_says_how_to_build_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main(["--kit", str(tmp_path), "--out", str(tmp_path / "out"), "--cpu"]) == 2
    assert "is not a kit (no kit.json): build it with python scripts/gpu_kit.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_damaged_wheel_is_named_before_pip_runs(session: gpu_check.Session) -> None:
    (session.kit / "wheels").mkdir(parents=True)
    (session.kit / "wheels" / "trl-1.14.2-py3-none-any.whl").write_bytes(b"cut off")
    (session.kit / "kit.json").write_text(
        '{"wheels": [{"file": "trl-1.14.2-py3-none-any.whl", "sha256": "0"}]}'
    )
    with pytest.raises(ValueError, match="trl-1.14.2-py3-none-any.whl differ from kit.json"):
        gpu_check.install(session)
    assert not session.site.exists()


def test_a_work_folder_of_other_files_is_not_deleted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "kit.json").write_text("{}")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    args = [
        "--kit",
        str(tmp_path / "kit"),
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
        "--cpu",
    ]
    assert gpu_check.main(args) == 2
    assert "holds files this script did not write" in capsys.readouterr().err
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"
