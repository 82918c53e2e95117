"""Sampling, its resumable store and the CPU decode loop: `pytest tests/unit/test_sampling.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
import standin_unsloth
import torch

from helpers import data, decoding, sampling

SETTINGS = {"k": 2, "temperature": 0.7, "max_new_tokens": 24, "seed": 0}


@pytest.fixture
def problems(gsm8k_dir: Path):
    return data.load_gsm8k("train", source=gsm8k_dir).select([4, 3])


def test_two_problems_two_samples(smollm2, problems, tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    frame = sampling.sample(smollm2, problems, out_path=out, **SETTINGS)
    assert len(frame) == 4 and len(out.read_text().splitlines()) == 4
    assert set(sampling.ROW_FIELDS) <= set(frame.columns)
    assert {"gold", "pred_strict", "pred_lenient", "strict_correct", "lenient_correct"} <= set(frame.columns)
    assert sorted(zip(frame["problem_id"], frame["sample_idx"], strict=True)) == [
        ("train-00003", 0), ("train-00003", 1), ("train-00004", 0), ("train-00004", 1)
    ]  # fmt: skip
    assert set(frame["finish_reason"]) <= {"stop", "answer", "length"}
    assert (frame["n_tokens"] <= 24).all() and (frame["n_tokens"] > 0).all()
    assert set(frame["model"]) == {"smollm2-135m"} and set(frame["seed"]) == {0}
    assert set(frame["dtype"]) == {"float32"}  # the decode loop's model, loaded in fp32
    stats = sampling.read_stats(out)
    assert (stats["completions"], stats["backend"], stats["dtype"]) == (4, "transformers", "float32")


def test_a_killed_run_resumes_without_losing_or_repeating_rows(
    smollm2, problems, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "samples.jsonl"
    real = decoding.stream_completions

    def dies_after_three(*args, **kwargs):
        for i, completion in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt("killed")
            yield completion

    monkeypatch.setattr(decoding, "stream_completions", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        sampling.sample(smollm2, problems, out_path=out, **SETTINGS)
    before = out.read_text()
    assert len(before.splitlines()) == 3
    with open(out, "a") as f:
        f.write('{"problem_id": "train-00004", "sam')  # a write cut off mid-row
    monkeypatch.setattr(decoding, "stream_completions", real)
    frame = sampling.sample(smollm2, problems, out_path=out, **SETTINGS)
    after = out.read_text()
    assert after.startswith(before)  # earlier rows unchanged
    assert len(after.splitlines()) == 4 and len(frame) == 4
    assert not frame.duplicated(["problem_id", "sample_idx"]).any()


def test_a_finished_file_is_not_sampled_again(smollm2, problems, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "samples.jsonl"
    assert not sampling.complete(out, problems, 2)
    sampling.sample(smollm2, problems.select([0]), out_path=out, **SETTINGS)
    assert sampling.complete(out, problems.select([0]), 2) and not sampling.complete(out, problems, 2)
    sampling.sample(smollm2, problems, out_path=out, **SETTINGS)
    assert sampling.complete(out, problems, 2) and not sampling.complete(out, problems, 3)
    monkeypatch.setattr(decoding, "stream_completions", None)  # any sampling now would crash
    assert len(sampling.sample(smollm2, problems, out_path=out, **SETTINGS)) == 4


def test_samples_do_not_depend_on_batch_company(smollm2, problems) -> None:
    model, tokenizer = smollm2
    prompts = [data.render_prompt(tokenizer, q) for q in problems["question"]]
    requests = [decoding.Request(p, s, decoding.row_seed(0, str(p), s)) for p in range(2) for s in range(2)]
    kwargs = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 20}
    together = {
        (c.prompt_index, c.sample_idx): c.text
        for c in decoding.stream_completions(model, tokenizer, prompts, requests, max_rows=3, **kwargs)
    }
    for r in requests:
        (alone,) = decoding.stream_completions(model, tokenizer, prompts, [r], max_rows=1, **kwargs)
        assert alone.text == together[(r.prompt_index, r.sample_idx)]
    assert model.config._attn_implementation != decoding.GQA_ATTENTION  # restored after decoding


def test_a_completion_stops_right_after_its_answer_line() -> None:
    row = decoding.Row(decoding.Request(0, 0, 0), torch.Generator())
    for token, piece in enumerate(["So", " 9 + 9 = 18", "\n", "####", " 18", " apples"]):
        decoding._advance(row, token + 10, {2}, piece, max_new_tokens=50)
        assert row.finish_reason is None
    decoding._advance(row, 99, {2}, "\n", max_new_tokens=50)
    assert row.finish_reason == "answer" and row.text.endswith("#### 18 apples\n")


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        (["####", "\n"], None),  # a marker without a number does not end the completion
        (["#### 18"], None),  # the answer line is not finished until its newline
        (["a", "b", "c"], "length"),  # max_new_tokens reached
    ],
)
def test_finish_reasons(pieces: list[str], reason: str | None) -> None:
    row = decoding.Row(decoding.Request(0, 0, 0), torch.Generator())
    for token, piece in enumerate(pieces):
        decoding._advance(row, token + 10, {2}, piece, max_new_tokens=3)
    assert row.finish_reason == reason


def test_eos_stops_with_reason_stop() -> None:
    row = decoding.Row(decoding.Request(0, 0, 0), torch.Generator())
    decoding._advance(row, 2, {2}, "", max_new_tokens=3)
    assert row.finish_reason == "stop" and row.tokens == [2]


def test_row_seeds_are_stable_and_distinct() -> None:
    assert decoding.row_seed(0, "train-00001", 0) == decoding.row_seed(0, "train-00001", 0)
    seeds = {decoding.row_seed(s, p, i) for s in (0, 1) for p in ("a", "b") for i in range(4)}
    assert len(seeds) == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"k": 0}, "k=0: need at least one sample"),
        ({"temperature": -1.0}, "need temperature >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens >= 1"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    problems, tmp_path: Path, override, message
) -> None:
    out = tmp_path / "samples.jsonl"
    out.write_text('{"problem_id": "train-00004", "sample_idx": 0}\n')
    with pytest.raises(ValueError, match=message):
        sampling.sample("smollm2-135m", problems, out_path=out, **{**SETTINGS, **override})
    assert out.read_text() == '{"problem_id": "train-00004", "sample_idx": 0}\n'


def test_unknown_model_and_bad_adapter_are_refused(problems, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        sampling.sample("nope", problems, out_path=tmp_path / "s.jsonl", **SETTINGS)
    with pytest.raises(FileNotFoundError, match="No manifest.json"):
        sampling.sample("smollm2-135m", problems, out_path=tmp_path / "s.jsonl", adapter=tmp_path, **SETTINGS)
    assert not (tmp_path / "s.jsonl").exists()


def test_a_file_of_other_settings_is_refused_and_kept(smollm2, problems, tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    sampling.sample(smollm2, problems.select([0]), out_path=out, **{**SETTINGS, "k": 1})
    before = out.read_text()
    with pytest.raises(ValueError, match="holds samples with seed=\\['0'\\], not 5"):
        sampling.sample(smollm2, problems, out_path=out, **{**SETTINGS, "seed": 5})
    assert out.read_text() == before


def test_problems_without_gold_are_refused(tmp_path: Path) -> None:
    import datasets

    with pytest.raises(ValueError, match="lack columns \\['gold'\\]"):
        sampling.sample("smollm2-135m", datasets.Dataset.from_list([{"id": "a", "question": "q"}]),
                        out_path=tmp_path / "s.jsonl", **SETTINGS)  # fmt: skip


def test_the_vllm_path_on_a_standin_unsloth_base(smollm2, problems, tmp_path, monkeypatch) -> None:
    """The GPU branch against a stand-in Unsloth base (exactly the pinned Unsloth's attributes: no load_lora)."""
    standin_unsloth.install(monkeypatch)
    base, engine = standin_unsloth.load_base(*smollm2)
    frame = sampling.sample((base, smollm2[1]), problems, out_path=tmp_path / "s.jsonl", **SETTINGS)
    assert len(frame) == 4 and set(frame["model"]) == {"base/model"} and set(frame["backend"]) == {"unsloth"}
    (call,) = engine.calls
    assert call["lora"] is None and all(set(p) == {"prompt_token_ids"} for p in call["prompts"])
    assert [p.n for p in call["params"]] == [1] * 4 and len({p.seed for p in call["params"]}) == 4
    assert {p.max_tokens for p in call["params"]} == {SETTINGS["max_new_tokens"]}
    # One engine serves every variant's adapter as a LoRA request, each with a fresh id (notebook 08 on a GPU).
    for variant in ("SFT_1", "SFT_2"):
        frame = sampling.sample((base, smollm2[1]), problems, out_path=tmp_path / f"{variant}.jsonl",
                                adapter=f"runs/models/{variant}", **SETTINGS)  # fmt: skip
        assert set(frame["model"]) == {f"base/model+{variant}"}
    first, second = engine.calls[1]["lora"], engine.calls[2]["lora"]
    assert (first.lora_path, second.lora_path) == ("runs/models/SFT_1", "runs/models/SFT_2")
    assert first.lora_int_id != second.lora_int_id


def test_both_backends_cut_and_count_tokens_the_same_way(smollm2, problems, tmp_path, monkeypatch) -> None:
    """Greedy samples: vLLM (stand-in) decodes on past the answer line; the rows equal the CPU loop's."""
    standin_unsloth.install(monkeypatch)
    greedy = {**SETTINGS, "temperature": 0.0, "max_new_tokens": 32}
    cpu = sampling.sample(smollm2, problems, out_path=tmp_path / "cpu.jsonl", **greedy)
    base, _ = standin_unsloth.load_base(*smollm2)
    gpu = sampling.sample((base, smollm2[1]), problems, out_path=tmp_path / "gpu.jsonl", **greedy)
    columns, key = (
        ["problem_id", "sample_idx", "completion", "n_tokens", "finish_reason"],
        ["problem_id", "sample_idx"],
    )
    assert gpu[columns].sort_values(key).values.tolist() == cpu[columns].sort_values(key).values.tolist()


def test_replay_cuts_after_the_answer_line_and_counts_through_it(smollm2) -> None:
    tokenizer = smollm2[1]
    head = tokenizer("3+4=7\n#### 7\n", add_special_tokens=False)["input_ids"]
    tail = tokenizer("And then some more text.", add_special_tokens=False)["input_ids"]
    eos = {tokenizer.eos_token_id}
    assert decoding.replay(head + tail + [tokenizer.eos_token_id], tokenizer, eos, 100) == (
        "3+4=7\n#### 7",
        len(head),
        "answer",
    )
    assert decoding.replay(tail + [tokenizer.eos_token_id], tokenizer, eos, 100)[1:] == (
        len(tail) + 1,
        "stop",
    )
    assert decoding.replay(tail, tokenizer, eos, 3)[1:] == (3, "length")


def test_a_loaded_cpu_model_takes_no_other_adapter(smollm2, problems, tmp_path) -> None:
    with pytest.raises(ValueError, match="needs a vLLM engine that takes adapters"):
        sampling.sample(smollm2, problems, out_path=tmp_path / "s.jsonl", adapter="models/SFT_1", **SETTINGS)


def test_sampling_in_a_child_process_writes_the_same_rows(problems, tmp_path: Path, capfd) -> None:
    """On a GPU, `Run.sample` samples in a child process so that its vLLM engine is freed; on the CPU the
    child's rows equal those of the same call in this process (per-sample seeds)."""
    here = sampling.sample("smollm2-135m", problems, out_path=tmp_path / "here.jsonl", **SETTINGS)
    child = sampling.sample_isolated("smollm2-135m", problems, out_path=tmp_path / "child.jsonl", **SETTINGS)
    columns = ["problem_id", "sample_idx", "completion", "n_tokens", "finish_reason"]
    key = ["problem_id", "sample_idx"]
    assert child[columns].sort_values(key).values.tolist() == here[columns].sort_values(key).values.tolist()
    assert "sampling" in capfd.readouterr().err  # the child's progress bar is relayed


def test_a_failing_child_names_its_error_and_keeps_the_rows(problems, tmp_path: Path) -> None:
    # the child's error on the first line, the one a notebook's error and the pipeline show
    with pytest.raises(
        RuntimeError, match="^Sampling in a child process failed: ValueError: Unknown model 'no-such"
    ):
        sampling.sample_isolated("no-such-model", problems, out_path=tmp_path / "s.jsonl", **SETTINGS)


def test_an_interrupt_kills_the_child(problems, tmp_path: Path, monkeypatch) -> None:
    """Interrupting the kernel while a child samples must not leave it holding its engine (and the GPU)."""
    started = []
    popen = sampling.subprocess.Popen
    monkeypatch.setattr(
        sampling.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1]
    )

    class InterruptedStderr:
        def write(self, text: str) -> None:
            raise KeyboardInterrupt  # the user presses stop while the child's output is relayed

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sampling.sys, "stderr", InterruptedStderr())
    with pytest.raises(KeyboardInterrupt):
        sampling.sample_isolated("smollm2-135m", problems, out_path=tmp_path / "s.jsonl", **SETTINGS)
    assert started and started[0].poll() is not None  # killed, not left running
