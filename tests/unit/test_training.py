"""Training helpers that need no trainer run (the real training runs in tests/e2e): bad data, compute
accounting, early stopping, trainer settings. `pytest tests/unit/test_training.py`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import data, filtering, grpo_prompts, models, plots, runs, trainer_config, training
from helpers.config import config_hash

PROMPT = data.build_messages("What is 3+4?")
GOOD_SFT = {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "#### 7"}]}


@pytest.fixture
def run(tmp_path: Path) -> runs.Run:
    return runs.open_run(tmp_path / "run", "smoke")


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_good_rows_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "sft.jsonl", [json.dumps(GOOD_SFT), "", json.dumps(GOOD_SFT)])
    assert training.read_rows(path, "sft") == [GOOD_SFT, GOOD_SFT]


@pytest.mark.parametrize(
    ("lines", "kind", "message"),
    [
        ([], "sft", "holds no rows: nothing to train SFT on"),
        (["{not json"], "sft", "line 1, is not JSON"),
        (["[1, 2]"], "sft", "line 1: not a JSON object"),
        ([json.dumps({"prompt": PROMPT})], "sft", "line 1: missing column\\(s\\) \\['completion'\\]"),
        ([json.dumps(GOOD_SFT)], "orpo", "missing column\\(s\\) \\['chosen', 'rejected'\\]"),
        (
            [json.dumps(GOOD_SFT), json.dumps({**GOOD_SFT, "completion": "#### 7"})],
            "sft",
            "line 2: column 'completion' is not a list of chat messages",
        ),
        ([json.dumps({**GOOD_SFT, "prompt": []})], "sft", "column 'prompt' is not a list of chat messages"),
    ],
)
def test_bad_training_files_name_the_file_and_the_line(
    tmp_path: Path, lines: list[str], kind: str, message: str
) -> None:
    path = write(tmp_path / "data.jsonl", lines)
    with pytest.raises(training.BadTrainingData, match=message) as err:
        training.read_rows(path, kind)
    assert str(path) in str(err.value) and "Rebuild it with its notebook" in str(err.value)


def test_a_missing_training_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(training.BadTrainingData, match="nope.jsonl does not exist"):
        training.read_rows(tmp_path / "nope.jsonl", "orpo")


@pytest.mark.parametrize("train", [training.train_sft, training.train_orpo])
def test_bad_data_stops_training_before_any_model_is_loaded(
    run: runs.Run, train, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(models, "load_model", no_model)
    write(run.root / "datasets" / "sft_round1.jsonl", [])
    write(run.root / "datasets" / "orpo_round1.jsonl", ['{"prompt": 1}'])
    data_file = "datasets/sft_round1.jsonl" if train is training.train_sft else "datasets/orpo_round1.jsonl"
    with pytest.raises(training.BadTrainingData, match=data_file):
        train(run, "SFT_1", data_file, "samples/base_train.jsonl")


def test_missing_data_names_the_notebook_to_run(run: runs.Run) -> None:
    with pytest.raises(FileNotFoundError, match="Run 05_second_round first"):
        training.train_sft(run, "SFT_2", "datasets/sft_round2.jsonl", "samples/sft1_train.jsonl")


def test_a_missing_parent_names_its_notebook(run: runs.Run) -> None:
    write(run.root / "datasets" / "sft_round2.jsonl", [json.dumps(GOOD_SFT)])
    write(run.root / "samples" / "sft1_train.jsonl", [])
    with pytest.raises(FileNotFoundError, match="No models/SFT_1/manifest.json .* Run 03_sft first"):
        training.train_sft(
            run, "SFT_1_SFT_2", "datasets/sft_round2.jsonl", "samples/sft1_train.jsonl", parent="SFT_1"
        )


def test_unknown_variant_names_are_refused(run: runs.Run) -> None:
    with pytest.raises(ValueError, match="Unknown variant 'SFT_3'"):
        training._train(run, "SFT_3", "sft", None, None, {})


def test_cpu_trainer_settings_avoid_trls_slow_defaults(run: runs.Run) -> None:
    args = trainer_config.trainer_args(run, "SFT_1")
    assert (args["bf16"], args["fp16"], args["gradient_checkpointing"], args["use_cpu"]) == (
        False,
        False,
        False,
        True,
    )
    assert args["output_dir"] == str(run.root / "checkpoints" / "SFT_1")
    assert args["save_strategy"] == "no" and "save_steps" not in args  # smoke: save_steps=0
    full = runs.open_run(run.root.parent / "full", "smoke", save_steps=50)
    assert trainer_config.trainer_args(full, "GRPO")["save_steps"] == 50


def test_grpo_rows_are_the_train_problems_with_their_gold(run: runs.Run) -> None:
    rows = grpo_prompts.rows(run)
    problems = run.problems("train")
    assert len(rows) == run.cfg.grpo_max_rows
    assert rows[0]["prompt"] == data.build_messages(problems["question"][0])
    assert rows[0]["answer"] == problems["gold"][0]


def test_grpo_takes_whole_steps_of_prompts(run: runs.Run) -> None:
    three = runs.Run(run.root, dataclasses.replace(run.cfg, grpo_max_rows=None, grpo_prompts_per_step=3))
    assert len(grpo_prompts.rows(three)) == 15 and trainer_config.grpo_steps(three) == 5  # of 16 problems
    assert trainer_config.grpo_config(three).per_device_train_batch_size == 3 * run.cfg.k


def test_grpo_filtered_keeps_the_problems_the_base_solves_sometimes(run: runs.Run) -> None:
    problems = run.problems("train")
    ids, golds = problems["id"], problems["gold"]
    right = {ids[0]: 0, ids[1]: 2, ids[2]: run.cfg.k, ids[3]: 1}  # never, sometimes, always, sometimes
    samples = [
        {"problem_id": pid, "sample_idx": i, "completion": f"#### {gold if i < right.get(pid, 0) else 'x'}",
         "model": run.cfg.model, "n_tokens": 5, "finish_reason": "stop", "backend": "vllm", "dtype": "float32",
         "seed": 0, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 96}
        for pid, gold in zip(ids, golds, strict=True) for i in range(run.cfg.k)
    ]  # fmt: skip
    write(run.root / grpo_prompts.BASE_SAMPLES, [json.dumps(r) for r in samples])
    every = runs.Run(run.root, dataclasses.replace(run.cfg, grpo_max_rows=None))
    rows = grpo_prompts.rows(every, "GRPO_filtered")
    assert [r["answer"] for r in rows] == [golds[1], golds[3]]
    assert len(grpo_prompts.rows(run, "GRPO_filtered")) == run.cfg.grpo_max_rows == 2
    changed = trainer_config.grpo_config(run, "GRPO", scale_rewards="none", max_steps=9)
    carried = trainer_config.carry_over(changed, run, "GRPO", "GRPO_filtered", "grpo")
    assert carried.scale_rewards == "none" and carried.max_steps == 2  # its own steps: 2 prompts, 1 a step
    assert carried.output_dir.endswith("GRPO_filtered")
    never = [{**r, "completion": "#### x"} for r in samples]
    write(run.root / grpo_prompts.BASE_SAMPLES, [json.dumps(r) for r in never])
    with pytest.raises(filtering.NothingToTrainOn, match="Nothing to train GRPO_filtered on: of 16 training"):
        grpo_prompts.rows(run, "GRPO_filtered")


def test_tokens_generated_weights_each_window_by_its_steps() -> None:
    history = pd.DataFrame(
        {
            "step": [2, 4, 5, 5],
            "completions/mean_length": [10.0, 20.0, 30.0, None],
            "train_loss": [None] * 3 + [1],
        }
    )
    # windows of 2, 2 and 1 steps, 8 completions per step: (10*2 + 20*2 + 30*1) * 8
    assert training.tokens_generated(history, 8) == 720
    assert training.tokens_generated(pd.DataFrame({"step": [1]}), 8) == 0


def test_summary_shows_lineage_and_compute() -> None:
    manifest = {
        "method": "sft",
        "parent": "SFT_1",
        "data": {"sampled_by": "smollm2-135m+SFT_1", "rows": 5},
        "compute": {"tokens_trained": 100, "optimizer_steps": 2},
    }
    history = pd.DataFrame({"step": [1], "loss": [0.5]})
    figure = plots.training_curves(history, training.CURVES["sft"], "x")
    table = training.summary([training.Trained("SFT_1_SFT_2", Path("."), manifest, history, figure)])
    assert table.loc["SFT_1_SFT_2", "parent"] == "SFT_1"
    assert table.loc["SFT_1_SFT_2", "data_sampled_by"] == "smollm2-135m+SFT_1"
    assert table.loc["SFT_1_SFT_2", "tokens_trained"] == 100


def test_training_curves_say_when_nothing_was_logged() -> None:
    empty = plots.training_curves(pd.DataFrame({"step": [1], "loss": [1.0]}), ["reward"], "GRPO")
    assert "none of ['reward'] was logged" in empty.axes[0].texts[0].get_text()
    fig = plots.training_curves(
        pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5], "learning_rate": [1e-4, None]}),
        ["loss", "learning_rate"],
        "t",
    )
    assert [ax.get_title() for ax in fig.axes] == ["loss", "learning_rate"]


def test_meter_counts_masks_or_padding_free_tokens_and_survives_a_resume(tmp_path: Path) -> None:
    import torch

    meter = training._Meter(training.TOKEN_MASKS["sft"])
    step = meter.wrap(lambda model, inputs, *args: "loss")
    assert (
        step(None, {"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0]] * 2)})
        == "loss"
    )
    step(
        None, {"input_ids": torch.ones(1, 7), "position_ids": torch.arange(7)[None]}
    )  # padding-free: no mask
    assert (meter.backward_passes, meter.tokens) == (2, 6 + 7)
    (tmp_path / "checkpoint-2").mkdir()
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=2)
    meter.on_save(args, state, None)
    resumed = training._Meter(training.TOKEN_MASKS["sft"])
    resumed.restore(str(tmp_path / "checkpoint-2"))
    assert (resumed.backward_passes, resumed.tokens) == (2, 13) and resumed.wall_s() >= meter.seconds_before
    rule = training.RewardPlateau(window=1, patience=3, min_prompts=0)
    rule.groups.rows = [{"prompt": 1, "step": 1, "reward": 0.5, "zero_spread": False}]
    rule.on_save(args, state, None)
    again = training.RewardPlateau(window=1, patience=3, min_prompts=0)
    again.restore(str(tmp_path / "checkpoint-2"))
    assert again.groups.rows == rule.groups.rows


def test_a_checkpoint_cut_off_mid_save_is_deleted_and_training_resumes_from_the_one_before(
    tmp_path: Path,
) -> None:
    meter, plateau = training._Meter(training.TOKEN_MASKS["sft"]), training.RewardPlateau(1, 3, 0)
    for step in (1, 2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    args = SimpleNamespace(output_dir=str(tmp_path))
    for step in (1, 2):
        meter.on_save(args, SimpleNamespace(global_step=step), None)
        plateau.on_save(args, SimpleNamespace(global_step=step), None)
    meter.on_save(args, SimpleNamespace(global_step=10), None)  # killed before the plateau's file
    assert training._last_whole_checkpoint(tmp_path, [meter, plateau]) == str(tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert training._last_whole_checkpoint(tmp_path / "none", [meter]) is None


def gold_rows(run: runs.Run, n: int = 2) -> str:
    """`n` SFT rows in SFT_gold's file (the data set's solutions: no samples file to read)."""
    rows = [{**GOOD_SFT, "problem_id": f"p{i}"} for i in range(n)]
    write(run.root / "datasets" / "sft_gold.jsonl", [json.dumps(r) for r in rows])
    return "datasets/sft_gold.jsonl"


def save_fake_variant(run: runs.Run, name: str, config, lora) -> Path:
    """A saved variant's record as `_train` writes it, without the adapter."""
    path = run.root / "models" / name
    manifest = {
        "base_model": run.cfg.model, "parent": None, "method": "sft", "config_hash": config_hash(run.cfg),
        "data": {}, "hyperparameters": trainer_config.record(config, lora), "compute": {},
        trainer_config.RECORD_MARK: type(config).__name__, "backend": models.resolve_backend()[0],
    }  # fmt: skip
    write(path / models.MANIFEST, [json.dumps(manifest)])
    write(path / training.HISTORY, ["step,loss", "1,0.5"])
    return path


def test_a_rerun_loads_the_saved_variant_and_refuses_one_with_other_settings(
    run: runs.Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    data_file = gold_rows(run)
    config, lora = trainer_config.sft_config(run, "SFT_gold"), trainer_config.lora_settings(run)
    path = save_fake_variant(run, "SFT_gold", config, lora)
    again = training.train_sft(run, "SFT_gold", data_file, None, source="solutions", config=config)
    assert again.path == path and again.history["loss"].tolist() == [0.5]
    config.learning_rate = 1e-4  # the learner's change, after the variant was saved
    with pytest.raises(trainer_config.ChangedSettings, match="learning_rate 0.0002 there, 0.0001 now"):
        training.train_sft(run, "SFT_gold", data_file, None, source="solutions", config=config)
    lora.r = 4
    with pytest.raises(trainer_config.ChangedSettings, match="lora_r 8 there, 4 now"):
        training.train_sft(run, "SFT_gold", data_file, None, source="solutions", lora=lora)


def test_a_continued_variant_takes_no_lora_settings(run: runs.Run) -> None:
    write(run.root / "datasets" / "sft_round2.jsonl", [json.dumps(GOOD_SFT)])
    with pytest.raises(ValueError, match="SFT_1_SFT_2 continues SFT_1's adapter"):
        training._settings(run, "SFT_1_SFT_2", "sft", "SFT_1", None, trainer_config.lora_settings(run))


def test_the_settings_given_are_the_ones_trained_with_and_recorded(
    run: runs.Run, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SFT run on the CPU model (two rows, one step): the changed learning rate and LoRA rank are used."""
    config, lora = trainer_config.sft_config(run, "SFT_gold"), trainer_config.lora_settings(run)
    config.learning_rate, config.report_to, lora.r = 1e-4, [], 4
    with caplog.at_level("INFO", logger="helpers.training"):
        trained = training.train_sft(
            run, "SFT_gold", gold_rows(run), None, source="solutions", config=config, lora=lora
        )
    assert "settings changed in the notebook: learning_rate 0.0001 (the run's: 0.0002)" in caplog.text
    recorded = trained.manifest["hyperparameters"]
    assert (recorded["learning_rate"], recorded["lora_r"], recorded["lora_alpha"]) == (1e-4, 4, 16)
    assert "report_to" not in recorded  # [] is TRL's default
    assert trained.manifest[trainer_config.RECORD_MARK] == "SFTConfig"
    adapter = json.loads((trained.path / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 16)
    assert trained.manifest["changed_by_trainer"] == {}  # TRL's trainers keep the config as given on the CPU
    assert config.learning_rate == 1e-4 and config.report_to == []  # the notebook's object is left as it was
