"""Profiles and their validation: `pytest tests/unit/test_config.py`."""

from __future__ import annotations

import pytest

from helpers import config


def test_every_profile_resolves_and_hashes_stably() -> None:
    for name in config.PROFILES:
        cfg = config.resolve(name)
        assert cfg.profile == name
        assert config.config_hash(cfg) == config.config_hash(config.resolve(name))
    assert len({config.config_hash(config.resolve(n)) for n in config.PROFILES}) == len(config.PROFILES)


def test_smoke_runs_on_the_toy_set_and_full_on_all_of_gsm8k() -> None:
    smoke, full = config.resolve("smoke"), config.resolve("full")
    assert (smoke.dataset, smoke.model) == ("arithmetic", "smollm2-135m")
    assert (full.dataset, full.n_train, full.n_test, full.k) == ("gsm8k", None, None, 8)
    assert config.resolve("smoke-gsm8k").dataset == "gsm8k"


def test_overrides_apply_and_none_keeps_the_value() -> None:
    cfg = config.resolve("smoke", n_train=3, k=None, temperature=1)
    assert (cfg.n_train, cfg.k, cfg.temperature) == (3, config.SMOKE.k, 1.0)
    assert config.config_hash(cfg) != config.config_hash(config.SMOKE)


def test_resolve_from_a_base_keeps_its_values() -> None:
    base = config.resolve("smoke", n_train=3)
    assert config.resolve("smoke", base, k=2).n_train == 3


@pytest.mark.parametrize(
    ("profile", "overrides", "message"),
    [
        (
            "gpu",
            {},
            "Unknown profile 'gpu'. Choose one of: smoke, smoke-gsm8k, cpu-study, full, colab-t4, gpu-smoke.",
        ),
        ("smoke", {"n_trian": 3}, "Unknown setting\\(s\\) \\['n_trian'\\]"),
        ("smoke", {"k": "four"}, "Setting k='four' should be int, got str"),
        ("smoke", {"k": 0}, "k=0 \\(must be > 0\\)"),
        ("smoke", {"grpo_window": 0}, "grpo_window=0 \\(must be > 0\\)"),
        ("smoke", {"grpo_prompts_per_step": 0}, "grpo_prompts_per_step=0 \\(must be > 0\\)"),
        ("smoke", {"sft_lr": -1}, "sft_lr=-1.0 \\(must be > 0\\)"),
        ("smoke", {"dataset": "mnist"}, "dataset='mnist' \\(choose one of: arithmetic, gsm8k\\)"),
        ("smoke", {"filter_checker": "judge"}, "filter_checker='judge'"),
        ("smoke", {"top_p": 1.5}, "0 < top_p <= 1"),
        ("smoke", {"large_k_n": 2}, "large_k_n=2 < k=4 \\(09 samples past the evaluation's k"),
        ("smoke", {"large_k_problems": 0}, "large_k_problems=0 \\(must be >= 1, or None for all\\)"),
    ],
)
def test_bad_settings_are_named(profile: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.resolve(profile, **overrides)


def test_round_trip_and_diff() -> None:
    cfg = config.resolve("smoke", n_train=5)
    assert config.from_dict({**config.to_dict(cfg), "config_hash": "x"}) == cfg
    assert config.diff(config.to_dict(cfg), config.to_dict(config.SMOKE)) == {"n_train": (5, 16)}


def test_profile_is_not_an_override_and_the_toy_set_needs_sizes() -> None:
    with pytest.raises(ValueError, match="profile is not an override"):
        config.resolve("smoke", profile="full")
    with pytest.raises(ValueError, match="n_train=None \\(the generated toy set has no 'all'"):
        config.resolve("smoke", config.RunConfig(**{**config.to_dict(config.SMOKE), "n_train": None}))


def test_grpos_batch_is_its_own_setting_not_the_sft_batch() -> None:
    # GRPO counts prompts a step (k completions each): an SFT batch that is no multiple of k is no problem
    assert config.resolve("smoke", k=3, batch_size=4, grpo_max_rows=1).grpo_prompts_per_step == 1
    with pytest.raises(
        ValueError, match=r"GRPO's 1 prompt\(s\) < grpo_prompts_per_step=2 \(no GRPO step would run"
    ):
        config.resolve("smoke", grpo_max_rows=1, grpo_prompts_per_step=2)


def test_09s_settings_are_outside_the_runs_identity() -> None:
    cfg = config.resolve("cpu-study")
    assert config.config_hash(config.resolve("cpu-study", cfg, large_k_n=64)) == config.config_hash(cfg)
    assert config.config_hash(config.resolve("cpu-study", cfg, k=4, batch_size=8)) != config.config_hash(cfg)
    older = {k: v for k, v in config.to_dict(cfg).items() if k not in config.LATER_STEP_SETTINGS}
    assert config.from_dict(older) == cfg  # a run made before they existed gets its profile's
    assert config.from_dict({**older, "k": 64}).large_k_n == 64  # and at least its k, so that it stays valid
    with pytest.raises(
        ValueError, match=r"no value for the setting\(s\) \['k', 'large_k_n', 'large_k_problems'\]"
    ):
        config.from_dict({**{k: v for k, v in older.items() if k != "k"}, "profile": "unknown"})
