"""Bad input everywhere: every reader fed a malformed file, setting or `-p` override gives one clear error that
names the file (or setting), the line or key, and leaves the run directory as it was. A table of named bad
inputs, then hypothesis corruptions of valid files. `pytest tests/property/test_bad_input.py`

Count the distinct bad inputs of the table:
    pytest --collect-only -q tests/property/test_bad_input.py | grep -c '_is_named\\['
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import config, data, models, pipeline, runs, sampling, training
from helpers.files import BadInput

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Valid inputs, which the cases below break one way each ------------------------------------------------

CONFIG = {**config.to_dict(config.SMOKE), "config_hash": config.config_hash(config.SMOKE)}
SAMPLE = {
    "problem_id": "toy-train-00000",
    "sample_idx": 0,
    "completion": "3+4=<<3+4=7>>7\n#### 7",
    "n_tokens": 12,
    "finish_reason": "answer",
    "model": "smollm2-135m",
    "backend": "vllm",
    "dtype": "bfloat16",
    "seed": 0,
    "temperature": 0.7,
    "top_p": 1.0,
    "max_new_tokens": 128,
}
PROMPT = data.build_messages("What is 3+4?")
SFT = {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "#### 7"}]}
ORPO = {
    "prompt": PROMPT,
    "chosen": SFT["completion"],
    "rejected": [{"role": "assistant", "content": "#### 8"}],
}
GSM8K = {"question": "Tom has 7 apples and gets 5 more. How many?", "answer": "7+5=<<7+5=12>>12\n#### 12"}
GSM8K_2 = {"question": "It is -5 degrees and drops 3. What now?", "answer": "-5-3=<<-5-3=-8>>-8\n#### -8"}
MANIFEST = {
    "base_model": "smollm2-135m",
    "parent": None,
    "method": "sft",
    "config_hash": CONFIG["config_hash"],
    "data": {"file": "datasets/sft_round1.jsonl", "rows": 2, "sampled_by": "smollm2-135m"},
    "compute": {"tokens_trained": 100, "optimizer_steps": 1, "wall_s": 1.0},
}


def jsonl(*rows: Any) -> bytes:
    """One line per row: a dict as JSON, a str or bytes as it is."""
    lines = [
        r if isinstance(r, bytes) else r.encode() if isinstance(r, str) else json.dumps(r).encode()
        for r in rows
    ]
    return b"".join(line + b"\n" for line in lines)


def config_json(rehash: bool = False, drop: tuple[str, ...] = (), **changes: Any) -> bytes:
    """The smoke config with `changes`, its hash kept (an edit) or recomputed (`rehash`: a consistent file)."""
    values = {k: v for k, v in {**CONFIG, **changes}.items() if k not in drop}
    if rehash:
        values["config_hash"] = config.config_hash(config.from_dict(values))
    return json.dumps(values, indent=2).encode()


# --- The readers: where each one's file lies in the run directory, and how it is read ------------------------


@dataclass(frozen=True)
class Reader:
    relative: str  # the file's place in the run directory
    read: Callable[[Path], Any]
    valid: bytes  # a file it reads without complaint
    # A phrase every message of this reader carries: the way out (GSM8K's messages say what a row needs instead).
    fix: str | None


def _open_run(root: Path) -> Any:
    return runs.open_run(root, "smoke")


def _graded(root: Path) -> Any:
    return runs.open_run(root, "smoke").graded_samples("samples/base_train.jsonl", "train", "01_sampling")


READERS = {
    "config": Reader("config.json", _open_run, json.dumps(CONFIG).encode(), "run directory"),
    "samples": Reader(
        "samples/base_train.jsonl",
        lambda root: sampling.read_samples(root / "samples/base_train.jsonl"),
        jsonl(SAMPLE, {**SAMPLE, "sample_idx": 1}),
        "Delete the file to resample",
    ),
    "graded": Reader("samples/base_train.jsonl", _graded, jsonl(SAMPLE), "Delete it and run 01_sampling"),
    "sft": Reader(
        "datasets/sft_round1.jsonl",
        lambda root: training.read_rows(root / "datasets/sft_round1.jsonl", "sft"),
        jsonl(SFT, SFT),
        "Rebuild it with its notebook",
    ),
    "orpo": Reader(
        "datasets/orpo_round1.jsonl",
        lambda root: training.read_rows(root / "datasets/orpo_round1.jsonl", "orpo"),
        jsonl(ORPO),
        "Rebuild it with its notebook",
    ),
    "gsm8k": Reader(
        "gsm8k/train.jsonl",
        lambda root: data.load_gsm8k("train", source=root / "gsm8k"),
        jsonl(GSM8K, GSM8K_2),
        None,
    ),
    "manifest": Reader(
        "models/SFT_1/manifest.json",
        lambda root: models.read_manifest(root / "models/SFT_1"),
        json.dumps(MANIFEST).encode(),
        "Retrain the variant",
    ),
}


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under `root` with its bytes and mtime (None for a directory): what "unchanged" compares."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def make_run(root: Path, reader: Reader, content: bytes) -> None:
    """A real smoke run directory holding `content` where `reader` reads."""
    runs.open_run(root, "smoke")
    target = root / reader.relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        target.unlink()
    target.write_bytes(content)


def case(reader: str, content: bytes, *expected: str, kind: type[Exception] = BadInput, id: str) -> Any:
    return pytest.param(reader, content, expected, kind, id=id)


MISMATCH = runs.ConfigMismatch
FILE_CASES = [
    # config.json of a run directory
    case("config", b'{"profile": "smoke",', "config.json is not valid JSON", id="config-truncated-object"),
    case("config", config_json()[:200], "config.json is not valid JSON", id="config-cut-mid-file"),
    case("config", b"", "config.json is not valid JSON", id="config-empty-file"),
    case("config", b'{"profile": "sm\xffoke"}', "config.json, line 1, is not UTF-8", id="config-non-utf8"),
    case("config", b"\n\n\xc3(", "config.json, line 3, is not UTF-8", id="config-non-utf8-line-3"),
    case("config", b"[1, 2]", "holds a JSON list, not an object of settings", id="config-a-list"),
    case("config", b'"smoke"', "holds a JSON str, not an object", id="config-a-string"),
    case("config", b"null", "holds a JSON NoneType", id="config-null"),
    case("config", config_json(k="4"), "Setting k='4' should be int, got str", id="config-k-a-string"),
    case("config", config_json(k=4.0), "Setting k=4.0 should be int, got float", id="config-k-a-float"),
    case("config", config_json(k=None), "Setting k=None should be int", id="config-k-null"),
    case(
        "config", config_json(temperature="0.7"), "temperature='0.7' should be float", id="config-T-a-string"
    ),
    case(
        "config",
        config_json(n_train=True),
        "n_train=True should be int, got bool",
        id="config-n_train-a-bool",
    ),
    case("config", config_json(easiest_first=0), "easiest_first=0 should be bool", id="config-bool-an-int"),
    case("config", config_json(profile=5), "profile=5 should be str", id="config-profile-a-number"),
    case("config", config_json(model=["a"]), "model=['a'] should be str, got list", id="config-model-a-list"),
    case(
        "config", config_json(lora_r={"r": 8}), "lora_r={'r': 8} should be int", id="config-lora_r-an-object"
    ),
    case(
        "config",
        config_json().replace(b'"temperature": 0.7', b'"temperature": NaN'),
        "temperature=nan should be a finite number",
        id="config-T-NaN",
    ),
    case(
        "config",
        config_json().replace(b'"top_p": 1.0', b'"top_p": Infinity'),
        "top_p=inf should be a finite number",
        id="config-top_p-Infinity",
    ),
    case(
        "config",
        config_json().replace(b'"k": 4,', b'"k": 4, "k": 8,'),
        "key(s) ['k'] given twice",
        id="config-duplicate-key",
    ),
    case("config", config_json(drop=("config_hash",)), "config_hash=None, not the hash", id="config-no-hash"),
    case("config", config_json(config_hash="../../x"), "config_hash='../../x'", id="config-hash-a-path"),
    case("config", config_json(n_train=8), "do not match its config_hash", id="config-edited-by-hand"),
    case("config", config_json(rehash=True, k=0), "k=0 (must be > 0)", id="config-k-0-rehashed"),
    case("config", config_json(rehash=True, top_p=0.0), "0 < top_p <= 1", id="config-top_p-0-rehashed"),
    case(
        "config",
        config_json(rehash=True, profile="gpu"),
        "Unknown profile 'gpu'",
        id="config-unknown-profile",
    ),
    case("config", config_json(rehash=True, dataset="mnist"), "dataset='mnist'", id="config-unknown-dataset"),
    case("config", config_json(rehash=True, model=" "), "model=' '", id="config-model-blank"),
    case(
        "config",
        config_json(drop=("teacher",)),
        "lacks the settings ['teacher']",
        kind=MISMATCH,
        id="config-missing-key",
    ),
    case(
        "config", config_json(colour="red"), "colour: 'red' -> None", kind=MISMATCH, id="config-unknown-key"
    ),
    case(
        "config",
        config_json(rehash=True, **config.to_dict(config.PROFILES["smoke-gsm8k"])),
        "profile: 'smoke-gsm8k' -> 'smoke'",
        kind=MISMATCH,
        id="config-of-another-profile",
    ),
    # samples/*.jsonl (sampling.read_samples)
    case(
        "samples",
        b'{"problem_id": "toy\n' + jsonl(SAMPLE),
        "line 1, is not a JSON row",
        id="samples-cut-line",
    ),
    case("samples", jsonl(SAMPLE, b'{"problem_id": "\xff"}'), "line 2, is not UTF-8", id="samples-non-utf8"),
    case("samples", jsonl([SAMPLE]), "line 1: a JSON list, not a sample row", id="samples-a-list-row"),
    case("samples", jsonl("7"), "line 1: a JSON int, not a sample row", id="samples-a-number-row"),
    case(
        "samples",
        jsonl({k: v for k, v in SAMPLE.items() if k != "completion"}),
        "line 1: missing field(s) ['completion']",
        id="samples-missing-completion",
    ),
    case("samples", jsonl({}), "missing field(s) ['problem_id', 'sample_idx'", id="samples-empty-object"),
    case(
        "samples", jsonl({**SAMPLE, "sample_idx": "0"}), "sample_idx='0' should be int", id="samples-idx-text"
    ),
    case(
        "samples",
        jsonl({**SAMPLE, "sample_idx": True}),
        "sample_idx=True should be int",
        id="samples-idx-bool",
    ),
    case("samples", jsonl({**SAMPLE, "sample_idx": -1}), "sample_idx=-1", id="samples-idx-negative"),
    case(
        "samples", jsonl({**SAMPLE, "n_tokens": 3.5}), "n_tokens=3.5 should be int", id="samples-tokens-float"
    ),
    case(
        "samples",
        jsonl({**SAMPLE, "completion": None}),
        "completion=None should be str",
        id="samples-null-text",
    ),
    case(
        "samples", jsonl({**SAMPLE, "problem_id": 0}), "problem_id=0 should be str", id="samples-id-a-number"
    ),
    case(
        "samples",
        jsonl(json.dumps(SAMPLE).replace('"temperature": 0.7', '"temperature": NaN')),
        "temperature=nan should be a finite number",
        id="samples-T-NaN",
    ),
    case(
        "samples",
        jsonl(SAMPLE, {**SAMPLE, "completion": "#### 8"}),
        "line 2, gives sample 0 of 'toy-train-00000' again, unlike line 1",
        id="samples-same-sample-twice",
    ),
    case(
        "samples",
        jsonl(json.dumps(SAMPLE).replace('"seed": 0', '"seed": 0, "seed": 1')),
        "line 1, is not a JSON row (key(s) ['seed'] given twice",
        id="samples-duplicate-key",
    ),
    case("samples", jsonl(SAMPLE, "", SAMPLE), "line 2, is not a JSON row", id="samples-blank-line"),
    case("graded", b"", "holds no samples", id="samples-empty-file"),
    case("graded", b'{"problem_id": "toy', "holds no samples", id="samples-only-a-partial-line"),
    # datasets/*.jsonl (training.read_rows), SFT and ORPO
    case("sft", b"", "holds no rows: nothing to train SFT on", id="sft-empty-file"),
    case("sft", b"\n  \n", "holds no rows", id="sft-blank-lines-only"),
    case("sft", jsonl(SFT)[:40], "line 1, is not JSON", id="sft-truncated"),
    case("sft", jsonl(SFT) + b"\x80\n", "line 2, is not UTF-8", id="sft-non-utf8"),
    case("sft", jsonl("null"), "line 1: not a JSON object", id="sft-null-row"),
    case("sft", jsonl({"completion": SFT["completion"]}), "missing column(s) ['prompt']", id="sft-no-prompt"),
    case(
        "sft",
        jsonl({**SFT, "completion": "#### 7"}),
        "column 'completion' is not a list",
        id="sft-text-reply",
    ),
    case("sft", jsonl({**SFT, "prompt": []}), "column 'prompt' is not a list", id="sft-empty-prompt"),
    case(
        "sft",
        jsonl(
            json.dumps({"prompt": PROMPT})[:-1] + ', "completion": [{"role": "assistant", "content": NaN}]}'
        ),
        "column 'completion' is not a list of chat messages",
        id="sft-content-NaN",
    ),
    case(
        "sft",
        jsonl({**SFT, "completion": [{"content": "#### 7"}]}),
        "column 'completion' is not a list",
        id="sft-message-without-role",
    ),
    case(
        "sft",
        jsonl(json.dumps(SFT).replace('"completion":', '"prompt": [], "completion":')),
        "key(s) ['prompt'] given twice",
        id="sft-duplicate-key",
    ),
    case("orpo", jsonl(SFT), "missing column(s) ['chosen', 'rejected']", id="orpo-an-sft-row"),
    case(
        "orpo",
        jsonl({**ORPO, "chosen": ORPO["chosen"][0]}),
        "column 'chosen' is not a list",
        id="orpo-one-message",
    ),
    case(
        "orpo", jsonl({**ORPO, "rejected": None}), "column 'rejected' is not a list", id="orpo-null-rejected"
    ),
    case("orpo", jsonl(ORPO, b'{"prompt": "\xfe"}'), "line 2, is not UTF-8", id="orpo-non-utf8"),
    case("orpo", jsonl(ORPO, "{"), "line 2, is not JSON", id="orpo-truncated-last-line"),
    # GSM8K files (data.load_gsm8k from a directory)
    case("gsm8k", b"", "train.jsonl holds no rows", id="gsm8k-empty-file"),
    case(
        "gsm8k",
        jsonl(GSM8K, '{"question": "Wh'),
        "row train-00001 (line 2) is not valid JSON",
        id="gsm8k-cut",
    ),
    case("gsm8k", jsonl(GSM8K, GSM8K)[:-1] + b"\xff\n", "line 2, is not UTF-8", id="gsm8k-non-utf8"),
    case(
        "gsm8k",
        jsonl(GSM8K, "", GSM8K_2),
        "row train-00001 (line 2) is not valid JSON",
        id="gsm8k-blank-line",
    ),
    case("gsm8k", jsonl([GSM8K]), "row train-00000 is a JSON list", id="gsm8k-a-list-row"),
    case(
        "gsm8k",
        jsonl({"question": "q?"}),
        "row train-00000 has no text in field 'answer'",
        id="gsm8k-no-answer",
    ),
    case(
        "gsm8k",
        jsonl({**GSM8K, "answer": "12 apples"}),
        "field 'answer' has no '#### <number>'",
        id="gsm8k-no-final-line",
    ),
    case(
        "gsm8k",
        jsonl({**GSM8K, "answer": "#### NaN"}),
        "field 'answer' has no '#### <number>'",
        id="gsm8k-NaN-answer",
    ),
    case(
        "gsm8k",
        jsonl({**GSM8K, "question": 5}),
        "has no text in field 'question'",
        id="gsm8k-number-question",
    ),
    case(
        "gsm8k",
        jsonl(json.dumps(GSM8K).replace('"question":', '"question": NaN, "q":')),
        "has no text in field 'question'",
        id="gsm8k-NaN-question",
    ),
    case(
        "gsm8k",
        jsonl(GSM8K, GSM8K_2, {**GSM8K, "answer": "#### 13"}),
        "line 3: row train-00002 asks the question of row train-00000 again",
        id="gsm8k-same-problem-twice",
    ),
    case(
        "gsm8k",
        jsonl(json.dumps(GSM8K).replace('"answer":', '"question": "other", "answer":')),
        "key(s) ['question'] given twice",
        id="gsm8k-duplicate-key",
    ),
    # models/<variant>/manifest.json (models.read_manifest)
    case("manifest", b'{"base_model": "m"', "manifest.json is not valid JSON", id="manifest-truncated"),
    case("manifest", b"", "manifest.json is not valid JSON", id="manifest-empty-file"),
    case("manifest", b'{"base_model": "\xe9"}', "line 1, is not UTF-8", id="manifest-non-utf8"),
    case("manifest", b"[]", "holds a JSON list, not an object", id="manifest-a-list"),
    case("manifest", b"{}", "lacks ['base_model', 'parent']", id="manifest-empty-object"),
    case("manifest", json.dumps({"base_model": "m"}).encode(), "lacks ['parent']", id="manifest-no-parent"),
    case(
        "manifest",
        json.dumps({**MANIFEST, "base_model": 5}).encode(),
        "base_model=5 should be str",
        id="manifest-base-a-number",
    ),
    case(
        "manifest",
        json.dumps({**MANIFEST, "parent": 1}).encode(),
        "parent=1 should be str or NoneType",
        id="manifest-parent-a-number",
    ),
    case(
        "manifest",
        json.dumps({**MANIFEST, "data": [1]}).encode(),
        "data=[1] should be dict",
        id="manifest-data-a-list",
    ),
    case(
        "manifest",
        json.dumps({**MANIFEST, "compute": "fast"}).encode(),
        "compute='fast' should be dict",
        id="manifest-compute-text",
    ),
    case(
        "manifest",
        json.dumps(MANIFEST).replace('"parent": null', '"parent": null, "parent": "SFT_1"').encode(),
        "key(s) ['parent'] given twice",
        id="manifest-duplicate-key",
    ),
]


@pytest.mark.parametrize(("reader_name", "content", "expected", "kind"), FILE_CASES)
def test_a_bad_file_is_named(
    tmp_path: Path, reader_name: str, content: bytes, expected: tuple[str, ...], kind: type[Exception]
) -> None:
    reader, root = READERS[reader_name], tmp_path.resolve() / "run"
    make_run(root, reader, content)
    before = snapshot(root)
    with pytest.raises(kind) as err:
        reader.read(root)
    message = str(err.value)
    assert type(err.value) in (kind, training.BadTrainingData)  # not a broader error caught by accident
    assert str(root / reader.relative) in message or kind is MISMATCH and str(root) in message
    for text in (*expected, reader.fix or ""):
        assert text in message
    assert snapshot(root) == before  # nothing in the run directory changed


# --- Settings: config.resolve (papermill parameters) and the pipeline's -p overrides ---------------------------

SETTING_CASES = [
    pytest.param("smoke", {"k": 0}, "k=0 (must be > 0)", id="k-0"),
    pytest.param("smoke", {"k": -1}, "k=-1 (must be > 0)", id="k-negative"),
    pytest.param("smoke", {"temperature": -0.1}, "temperature=-0.1", id="temperature-negative"),
    pytest.param("smoke", {"top_p": 1.5}, "top_p=1.5", id="top_p-above-1"),
    pytest.param("smoke", {"top_p": 0}, "top_p=0.0", id="top_p-0"),
    pytest.param("smoke", {"n_test": 0}, "n_test=0 (must be >= 1", id="n_test-0"),
    pytest.param("smoke", {"n_train": -5}, "n_train=-5 (must be >= 1", id="n_train-negative"),
    pytest.param("smoke", {"k": "four"}, "Setting k='four' should be int, got str", id="k-a-string"),
    pytest.param(
        "smoke", {"temperature": "hot"}, "temperature='hot' should be float", id="temperature-a-string"
    ),
    pytest.param("smoke", {"n_train": 2.5}, "n_train=2.5 should be int, got float", id="n_train-a-float"),
    pytest.param("smoke", {"max_new_tokens": True}, "max_new_tokens=True should be int", id="tokens-a-bool"),
    pytest.param(
        "smoke", {"temperature": float("nan")}, "temperature=nan should be a finite", id="temperature-nan"
    ),
    pytest.param("smoke", {"sft_lr": float("inf")}, "sft_lr=inf should be a finite", id="sft_lr-inf"),
    pytest.param(
        "smoke", {"orpo_beta": 10**400}, "should be a number in the float range", id="beta-huge-int"
    ),
    pytest.param("smoke", {"model": ""}, "model=''", id="model-empty"),
    pytest.param("gpu", {}, "Unknown profile 'gpu'. Choose one of: smoke", id="profile-unknown"),
    pytest.param("smoke", {"n_trian": 3}, "Unknown setting(s) ['n_trian']", id="setting-unknown"),
    pytest.param("smoke", {"profile": "full"}, "The profile is not an override", id="profile-as-override"),
]


@pytest.mark.parametrize(("profile", "overrides", "expected"), SETTING_CASES)
def test_a_bad_setting_is_named(profile: str, overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError) as err:
        config.resolve(profile, **overrides)
    assert type(err.value) is ValueError and expected in str(err.value)


def _no_notebook(step: pipeline.Step, run_dir: Path, *args: Any) -> Path:
    return (
        run_dir / "executed" / f"{step.name}.ipynb"
    )  # an input let through never runs a notebook, nor a model


def run_pipeline(run_dir: Path, *args: str) -> tuple[int, str]:
    """`python -m helpers.pipeline run --profile smoke --run-dir run_dir *args`: (exit code, stderr)."""
    err = io.StringIO()
    with (
        mock.patch.object(pipeline, "_execute", _no_notebook),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        code = pipeline.main(["run", "--profile", "smoke", "--run-dir", str(run_dir), *args])
    return code, err.getvalue()


COMMAND_CASES = [
    pytest.param("new", ["-p", "k=0"], "k=0 (must be > 0)", id="cli-k-0"),
    pytest.param("new", ["-p", "k=-1"], "k=-1", id="cli-k-negative"),
    pytest.param("new", ["-p", "temperature=-1"], "temperature=-1.0", id="cli-temperature-negative"),
    pytest.param("new", ["-p", "top_p=2"], "top_p=2.0", id="cli-top_p-2"),
    pytest.param("new", ["-p", "top_p=0"], "top_p=0.0", id="cli-top_p-0"),
    pytest.param("new", ["-p", "n_test=0"], "n_test=0", id="cli-n_test-0"),
    pytest.param("new", ["-p", "n_train=-3"], "n_train=-3", id="cli-n_train-negative"),
    pytest.param("new", ["-p", "k=four"], "Setting k='four' should be int", id="cli-k-a-word"),
    pytest.param("new", ["-p", "k="], "Setting k='' should be int", id="cli-k-empty"),
    pytest.param("new", ["-p", "k={[]: 1}"], "Setting k='{[]: 1}' should be int", id="cli-k-not-a-literal"),
    pytest.param(
        "new", ["-p", "temperature=1e999"], "temperature=inf should be a finite", id="cli-temperature-inf"
    ),
    pytest.param("new", ["-p", "seed=" + "-" * 10**5 + "1"], "Setting seed='---", id="cli-seed-deep-literal"),
    pytest.param("new", ["-p", "colour=red"], "Unknown setting(s) ['colour']", id="cli-unknown-setting"),
    pytest.param("new", ["-p", "k"], "Override 'k' is not key=value", id="cli-not-key-value"),
    pytest.param("new", ["--only", "10"], "Unknown step '10'", id="cli-unknown-step"),
    pytest.param("file", [], "is a file", id="cli-run-dir-a-file"),
    pytest.param(
        "run", ["-p", "n_train=4"], "other settings (n_train: 16 -> 4)", id="cli-run-of-other-settings"
    ),
    pytest.param("corrupt", [], "config.json is not valid JSON", id="cli-run-with-a-cut-config"),
    pytest.param("config-a-dir", [], "config.json is not a file", id="cli-run-whose-config-is-a-dir"),
    pytest.param("timings-cut", [], "timings.json is not valid JSON", id="cli-run-with-cut-timings"),
    pytest.param(
        "timings-a-list",
        [],
        "timings.json holds a JSON list, not an object of steps",
        id="cli-run-with-timings-a-list",
    ),
]


@pytest.mark.parametrize(("run_dir", "args", "expected"), COMMAND_CASES)
def test_a_bad_command_is_named(tmp_path: Path, run_dir: str, args: list[str], expected: str) -> None:
    root = tmp_path / "run"
    if run_dir == "file":
        root.write_text("x")
    elif run_dir != "new":
        runs.open_run(root, "smoke")
    if run_dir == "corrupt":
        (root / runs.CONFIG_FILE).write_bytes(config_json()[:100])
    elif run_dir == "config-a-dir":
        (root / runs.CONFIG_FILE).unlink()
        (root / runs.CONFIG_FILE).mkdir()
    elif run_dir.startswith("timings"):
        (root / pipeline.TIMINGS).write_text(
            '{"01_sampling": {"wall_s": ' if run_dir == "timings-cut" else "[1]"
        )
    before = snapshot(root)
    code, err = run_pipeline(root, *args)
    assert code == 1 and err.startswith("error: ") and expected in err
    assert root.exists() == (run_dir != "new") and snapshot(root) == before  # nothing made, nothing changed


def test_the_table_holds_at_least_60_distinct_bad_inputs() -> None:
    inputs = [(p.values[0], p.values[1]) for p in FILE_CASES]
    inputs += [(p.values[0], repr(p.values[1])) for p in SETTING_CASES]
    inputs += [(p.values[0], tuple(p.values[1])) for p in COMMAND_CASES]
    ids = [p.id for p in (*FILE_CASES, *SETTING_CASES, *COMMAND_CASES)]
    assert len(set(inputs)) == len(inputs) == len(set(ids)) >= 60


# --- Random corruptions (hypothesis) ----------------------------------------------------------------------


def corruptions(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` cut short, or with a few random bytes written over it, put into it, or a slice cut out of it."""
    at, junk = st.integers(0, len(valid)), st.binary(min_size=1, max_size=8)
    return st.one_of(
        at.map(lambda i: valid[:i]),
        st.tuples(at, junk).map(lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]) :]),
        st.tuples(at, junk).map(lambda t: valid[: t[0]] + t[1] + valid[t[0] :]),
        st.tuples(at, at).map(lambda t: valid[: min(t)] + valid[max(t) :]),
    )


@FAST
@given(st.data())
def test_a_corrupted_file_is_read_or_named(
    tmp_path_factory: pytest.TempPathFactory, draw: st.DataObject
) -> None:
    name = draw.draw(
        st.sampled_from(["config", "samples", "sft", "orpo", "gsm8k", "manifest"]), label="reader"
    )
    reader = READERS[name]
    content = draw.draw(corruptions(reader.valid), label="content")
    root = tmp_path_factory.mktemp("corrupt").resolve() / "run"
    make_run(root, reader, content)
    before = snapshot(root)
    try:
        reader.read(root)  # some corruptions leave a valid file (a cut at a line's end, a changed digit)
    except BadInput as err:
        assert str(root / reader.relative) in str(err)
    # A corrupted key: a setting lacking, or one this version does not know.
    except runs.ConfigMismatch as err:
        assert str(root) in str(err) and "new run directory" in str(err)
    assert snapshot(root) == before


# Values of every JSON type but the one a setting holds (an int would do for a float: JSON writes 1.0 as 1.0).
WRONG_TYPED = {
    int: st.one_of(st.text(max_size=6), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)),
    float: st.one_of(
        st.text(max_size=6), st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]), st.just([0.5])
    ),
    str: st.one_of(
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    bool: st.one_of(st.integers(), st.floats(), st.text(max_size=6), st.none()),
}


@FAST
@given(st.data())
def test_a_wrong_typed_setting_in_config_json_is_named(
    tmp_path_factory: pytest.TempPathFactory, draw: st.DataObject
) -> None:
    key = draw.draw(st.sampled_from(sorted(config.FIELDS)), label="key")
    value = draw.draw(WRONG_TYPED[type(getattr(config.SMOKE, key))], label="value")
    root = tmp_path_factory.mktemp("typed").resolve() / "run"
    make_run(root, READERS["config"], config_json(**{key: value}))
    before = snapshot(root)
    with pytest.raises(BadInput) as err:
        runs.open_run(root, "smoke")
    assert str(root / runs.CONFIG_FILE) in str(err.value) and f"Setting {key}=" in str(err.value)
    assert snapshot(root) == before


override_values = st.one_of(
    st.text(max_size=10),
    st.integers(-3, 5).map(str),
    st.floats().map(repr),
    st.sampled_from(
        ["True", "None", "[]", "{}", "{[]: 1}", "nan", "1e999", "-", "0.5", "'4'", "smollm2-135m"]
    ),
)


@FAST
@given(key=st.sampled_from(sorted(config.FIELDS - {"profile"})), raw=override_values)
def test_a_random_override_runs_or_is_named(
    tmp_path_factory: pytest.TempPathFactory, key: str, raw: str
) -> None:
    root = tmp_path_factory.mktemp("cli") / "run"
    code, err = run_pipeline(root, "-p", f"{key}={raw}")
    if code:  # refused: the setting is named and nothing was made
        assert code == 1 and err.startswith("error: ") and re.search(rf"\b{key}\b", err) and not root.exists()
