"""The trainer settings a notebook holds: TRL's configs and the LoRA settings, their table, the notebook's
changes, and the check of a saved variant's recorded settings. No model is loaded.
`pytest tests/unit/test_trainer_config.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import models, runs, trainer_config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    return runs.open_run(tmp_path_factory.mktemp("settings") / "run", "smoke")


@pytest.mark.parametrize(
    ("method", "kind", "expected"),
    [
        ("sft", "SFTConfig", {"learning_rate": 2e-4, "completion_only_loss": True, "max_length": 1024}),
        ("orpo", "ORPOConfig", {"learning_rate": 5e-5, "beta": 0.1, "num_train_epochs": 0.5}),
        ("grpo", "GRPOConfig", {"learning_rate": 5e-6, "num_generations": 4, "temperature": 0.7}),
    ],
)
def test_each_builder_gives_trls_config_with_the_runs_settings(run, method, kind, expected) -> None:
    built = getattr(trainer_config, f"{method}_config")(run)
    assert type(built).__name__ == kind
    assert {key: getattr(built, key) for key in expected} == expected
    # the CPU avoids TRL's GPU defaults (bf16, gradient checkpointing), which make a step about 30x slower
    assert (built.use_cpu, built.bf16, built.gradient_checkpointing) == (True, False, False)


def test_grpo_steps_are_one_pass_over_its_prompts(run) -> None:
    # smoke: grpo_max_rows=2 prompts, batch 4 x accum 1 / k=4 = 1 prompt a step
    assert trainer_config.grpo_steps(run) == 2 == trainer_config.grpo_config(run).max_steps


def test_the_table_lists_what_differs_from_trls_defaults_beside_them(run) -> None:
    table = trainer_config.settings_table(trainer_config.sft_config(run), trainer_config.lora_settings(run))
    assert table.loc[("SFTConfig", "learning_rate")].tolist() == ["0.0002", "2e-05"]  # TRL's SFT default
    assert table.loc[("SFTConfig", "gradient_checkpointing")].tolist() == ["False", "True"]
    assert ("SFTConfig", "max_length") not in table.index  # 1024 is TRL's default too
    assert ("SFTConfig", "output_dir") not in table.index  # where files go, not how it trains
    assert table.loc[("LoRA", "alpha")].tolist() == ["16", "8"]  # peft's default alpha
    assert table.loc[("LoRA", "target_modules")]["value"].startswith("q_proj, k_proj")


def test_a_setting_changed_on_the_object_is_used_and_reported(run) -> None:
    config = trainer_config.sft_config(run)
    config.learning_rate = 1e-4
    used, changes = trainer_config.resolve(config, run, "SFT_1", "sft")
    assert used.learning_rate == 1e-4 and used is not config
    assert changes == {"learning_rate": (2e-4, 1e-4)}
    assert trainer_config.resolve(trainer_config.sft_config(run), run, "SFT_1", "sft")[1] == {}


def test_a_changed_batch_size_derives_grpos_generation_batch_again(run) -> None:
    config = trainer_config.grpo_config(run)
    config.per_device_train_batch_size = 8  # set on the object: generation_batch_size still says 4
    used, changes = trainer_config.resolve(config, run, "GRPO", "grpo")
    assert (config.generation_batch_size, used.generation_batch_size) == (4, 8)
    assert list(changes) == ["per_device_train_batch_size"]


def test_a_changed_setting_that_trl_refuses_fails_before_training(run) -> None:
    config = trainer_config.grpo_config(run)
    config.num_generations = 3  # the batch of 4 completions is no multiple of 3
    with pytest.raises(
        ValueError, match=r"generation_batch_size \(4\) must be divisible by num_generations \(3\)"
    ):
        trainer_config.resolve(config, run, "GRPO", "grpo")


def test_a_config_for_another_variant_or_method_is_refused(run) -> None:
    with pytest.raises(ValueError, match="built for another variant. Build SFT_2's with"):
        trainer_config.resolve(trainer_config.sft_config(run, "SFT_1"), run, "SFT_2", "sft")
    with pytest.raises(TypeError, match="SFT_1 trains with a SFTConfig; got a ORPOConfig"):
        trainer_config.resolve(trainer_config.orpo_config(run, "SFT_1"), run, "SFT_1", "sft")


def test_a_lora_rank_above_the_runs_is_refused(run) -> None:
    lora = trainer_config.lora_settings(run)
    trainer_config.check_lora(lora, run)
    lora.r = run.cfg.lora_r * 2
    with pytest.raises(ValueError, match="LoRA rank r=16 is above the run's lora_r=8"):
        trainer_config.check_lora(lora, run)


def saved(config, lora, **more) -> dict:
    """A manifest as `training` writes it (the backend: this machine's)."""
    backend = models.resolve_backend()[0]
    record = trainer_config.record(config, lora)
    return {
        "hyperparameters": record,
        trainer_config.RECORD_MARK: type(config).__name__,
        "backend": backend,
        **more,
    }


def test_the_same_settings_pass_and_a_changed_one_is_named_with_the_fix(run) -> None:
    config, lora = trainer_config.sft_config(run), trainer_config.lora_settings(run)
    manifest, path = saved(config, lora), Path("/runs/x/models/SFT_1")
    trainer_config.check_saved(manifest, path, config, lora)
    changed = trainer_config.sft_config(run, learning_rate=1e-4)
    with pytest.raises(trainer_config.ChangedSettings) as err:
        trainer_config.check_saved(manifest, path, changed, lora)
    message = str(err.value)
    assert (
        "SFT_1 was trained with other settings than these (learning_rate 0.0002 there, 0.0001 now)" in message
    )
    assert "set those settings back" in message and f"delete {path}" in message


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        (
            {"weight_decay": 0.0},
            "weight_decay 0.001 there, '(default)' now",
        ),  # back to TRL's default: not listed now
        ({"adam_beta1": 0.8}, "adam_beta1 '(default)' there, 0.8 now"),  # off the default: listed now only
    ],
)
def test_a_setting_moved_to_or_from_its_default_is_a_change(run, change: dict, listed: str) -> None:
    config, lora = trainer_config.sft_config(run), trainer_config.lora_settings(run)
    with pytest.raises(trainer_config.ChangedSettings, match=listed.replace("(", r"\(").replace(")", r"\)")):
        trainer_config.check_saved(
            saved(config, lora), Path("SFT_1"), trainer_config.sft_config(run, **change), lora
        )


def test_a_changed_lora_setting_is_a_change_unless_the_adapter_came_from_a_parent(run) -> None:
    config, lora = trainer_config.sft_config(run), trainer_config.lora_settings(run)
    manifest = saved(config, lora)
    lora.dropout = 0.1
    with pytest.raises(trainer_config.ChangedSettings, match="lora_dropout 0.0 there, 0.1 now"):
        trainer_config.check_saved(manifest, Path("SFT_1"), config, lora)
    trainer_config.check_saved(manifest, Path("SFT_1_SFT_2"), config, None)  # continued: the parent's LoRA


def test_device_settings_are_compared_only_on_the_variants_kind_of_machine(run) -> None:
    config, lora = trainer_config.sft_config(run), trainer_config.lora_settings(run)
    gpu = saved(config, lora, backend="unsloth")
    gpu["hyperparameters"] = {**gpu["hyperparameters"], "optim": "adamw_8bit", "bf16": True}
    del gpu["hyperparameters"]["use_cpu"]
    trainer_config.check_saved(gpu, Path("SFT_1"), config, lora)  # trained on a GPU, loaded on a CPU
    gpu["hyperparameters"]["learning_rate"] = 1e-3
    with pytest.raises(trainer_config.ChangedSettings, match="learning_rate 0.001 there, 0.0002 now"):
        trainer_config.check_saved(gpu, Path("SFT_1"), config, lora)


def test_an_older_manifest_is_compared_on_the_settings_it_lists(run) -> None:
    """Manifests written before the full record listed a fixed few settings, defaults included."""
    config, lora = trainer_config.sft_config(run), trainer_config.lora_settings(run)
    older = {
        "backend": models.resolve_backend()[0],
        "hyperparameters": {"learning_rate": 2e-4, "max_steps": -1, "warmup_steps": 0.0, "lr_scheduler_type":
                            "linear", "optim": "adamw_torch", "lora_r": 8, "lora_alpha": 16},
    }  # fmt: skip
    trainer_config.check_saved(older, Path("SFT_1"), config, lora)
    with pytest.raises(trainer_config.ChangedSettings, match="max_steps -1 there, 3 now"):
        trainer_config.check_saved(older, Path("SFT_1"), trainer_config.sft_config(run, max_steps=3), lora)


def test_the_trainers_own_changes_are_listed(run) -> None:
    given = trainer_config.grpo_config(run)
    used = trainer_config.grpo_config(run, temperature=1.0)
    assert trainer_config.changed_by_trainer(given, used) == {"temperature": 1.0}
