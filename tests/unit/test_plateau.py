"""GRPO's groups and the plateau rule: `pytest tests/unit/test_plateau.py`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from helpers import plateau, rewards, training


def correctness_reward(completions: list, **kwargs) -> list[float | None]:
    return [None if c == "?" else float(c == "right") for c in completions]


def format_reward(completions: list, **kwargs) -> list[float]:
    return [0.5] * len(completions)


def _groups(totals: list[float], k: int = 2) -> pd.DataFrame:
    """Groups whose k completions all score `total` (no spread), one per prompt."""
    recorder = plateau.GroupRewards(["correctness_reward"], k)
    recorder._add("correctness_reward", [t for t in totals for _ in range(k)], 1)
    return recorder.frame()


def test_groups_are_k_consecutive_completions_scored_by_every_reward() -> None:
    recorder = plateau.GroupRewards(["correctness_reward", "format_reward"], k=2)
    right, form = recorder.wrap(correctness_reward), recorder.wrap(format_reward)
    assert right.__name__ == "correctness_reward"  # TRL logs each reward by its function's name
    state = SimpleNamespace(global_step=4)
    batch = ["right", "wrong", "right", "right", "?", "wrong"]  # three prompts x k=2
    assert right(completions=batch, trainer_state=state) == [1.0, 0.0, 1.0, 1.0, None, 0.0]
    assert recorder.frame().empty  # no group is whole before the format reward scored it
    form(completions=batch, trainer_state=state)
    table = recorder.frame()
    assert table["prompt"].tolist() == [1, 2, 3] and set(table["step"]) == {5}  # scored during step 5
    assert table["problem_id"].isna().all()  # the trainer passed no problem ids
    assert table["correctness_reward"].tolist() == [0.5, 1.0, 0.0]  # the unreadable gold is left out
    assert table["reward"].tolist() == [1.0, 1.5, 0.5]
    assert table["zero_spread"].tolist() == [False, True, True]  # NaN + 0.5 sums as 0.5 (TRL's nansum)
    assert table["correctness_reward_zero_spread"].tolist() == [False, True, True]
    assert table["format_reward_zero_spread"].all()
    with pytest.raises(ValueError, match="soft_format_reward is not one of the recorded rewards"):
        recorder.wrap(rewards.soft_format_reward)


def test_each_group_keeps_its_problem_id_and_an_empty_record_has_the_columns() -> None:
    recorder = plateau.GroupRewards(["correctness_reward"], k=2)
    assert list(recorder.frame().columns) == recorder.columns() and recorder.frame().empty
    recorder.wrap(correctness_reward)(completions=["right"] * 4, problem_id=["a", "a", "b", "b"])
    assert recorder.frame()["problem_id"].tolist() == ["a", "b"]


def test_the_total_follows_the_trainers_reward_weights() -> None:
    recorder = plateau.GroupRewards(["correctness_reward", "format_reward"], k=1, weights=[2.0, 0.0])
    recorder.wrap(correctness_reward)(completions=["right"])
    recorder.wrap(format_reward)(completions=["right"])
    assert recorder.frame()["reward"].tolist() == [2.0]


def test_a_window_is_the_mean_of_its_prompts_with_its_standard_error() -> None:
    found = plateau.windows(_groups([0.0, 1.0, 1.0, 1.0, 0.5]), size=2)
    assert found["end"].tolist() == [2, 4] and found["reward"].tolist() == [0.5, 1.0]  # the 5th waits
    assert found["se"].tolist() == pytest.approx([np.std([0, 1], ddof=1) / np.sqrt(2), 0.0])


def test_a_flat_reward_stops_after_patience_windows_but_not_before_min_prompts() -> None:
    flat = _groups([0.0, 1.0] * 8)  # windows of 2: every one 0.5 +- 0.5
    found = plateau.judge(flat, window=2, patience=3, min_prompts=0)
    assert (found.rises, found.stale, found.stop) == (0, 7, True)
    assert not plateau.judge(flat[:6], window=2, patience=3, min_prompts=0).stop  # 2 windows after the first
    assert plateau.judge(flat[:8], window=2, patience=3, min_prompts=0).stop
    assert not plateau.judge(flat, window=2, patience=3, min_prompts=17).stop


def test_a_rise_within_the_noise_is_no_rise_but_one_that_accumulates_is() -> None:
    noisy = [0.0, 1.0]
    slow = _groups(noisy + [0.2, 1.2] + [0.4, 1.4] + [1.6, 2.6])  # +0.2 a window, each +-0.5
    found = plateau.judge(slow, window=2, patience=5, min_prompts=0)
    # 2 x sqrt(0.5^2 + 0.5^2) = 1.41: the windows at +0.2 and +0.4 are noise, the one at +1.6 rises
    assert found.windows["rises"].tolist() == [False, False, False, True]
    assert found.windows["reference"].tolist() == [2, 2, 2, 8] and found.rises == 1 and found.stale == 0


def test_an_arm_did_not_train_when_no_window_rose() -> None:
    compute = {"prompts_consumed": 32, "prompts_available": 64, "stopped_early_at_step": 8, "window": 8}
    compute.update(windows=4, reward_rises=0, first_window_reward=0.2, last_window_reward=0.25)
    assert plateau.did_not_train(compute) == (
        "stopped by its plateau rule after 32 of 64 prompts; its mean reward over windows of 8 prompts never "
        "rose above its first window's beyond the noise (first 0.20, last 0.25)"
    )
    ran_out = {**compute, "stopped_early_at_step": None, "prompts_consumed": 64}
    assert plateau.did_not_train(ran_out).startswith("all 64 of its prompts used; its mean reward")
    assert "fewer than two windows of 8 prompts" in plateau.did_not_train({**compute, "windows": 1})
    assert plateau.did_not_train({**compute, "reward_rises": 1}) is None
    assert plateau.did_not_train({"stopped_early_at_step": 8}) is None  # a record without the rule's reading
    assert plateau.did_not_train(None) is None


def test_zero_spread_shares_and_their_difference_have_intervals() -> None:
    sparse = pd.DataFrame({"zero_spread": [True] * 9 + [False]})
    rich = pd.DataFrame({"zero_spread": [True] * 2 + [False] * 8})
    found = plateau.zero_spread_share(sparse, n_boot=200)
    assert found["share"] == 0.9 and found["lo"] <= 0.9 <= found["hi"] and found["groups"] == 10
    diff, low, high = plateau.share_difference(rich, sparse, n_boot=200)
    assert diff == pytest.approx(-0.7) and low <= diff <= high < 0
    with pytest.raises(ValueError, match="no group was recorded"):
        plateau.zero_spread_share(sparse[:0])


def test_the_callback_stops_training_and_keeps_its_groups_across_a_resume() -> None:
    rule = training.RewardPlateau(window=1, patience=2, min_prompts=0)
    wrapped = rule.record(SimpleNamespace(num_generations=2, reward_weights=None))
    control = SimpleNamespace(should_training_stop=False)
    for step in range(
        1, 4
    ):  # one prompt (gold 7) a step, one right and one wrong answer: the same every time
        for reward in wrapped:
            reward(
                completions=["#### 7", "#### 8"],
                answer=["7", "7"],
                trainer_state=SimpleNamespace(global_step=step - 1),
            )
        rule.on_step_end(None, SimpleNamespace(global_step=step), control)
    assert control.should_training_stop and rule.stopped_at == 3
    resumed = training.RewardPlateau(window=1, patience=2, min_prompts=0)
    resumed.record(SimpleNamespace(num_generations=2, reward_weights=None))
    resumed.load(rule.state())
    assert resumed.groups.frame().equals(rule.groups.frame()) and resumed.verdict().stale == 2
    assert "1. A window is 1 consecutive prompt(s)" in plateau.rule_text(1, 2, 0)
