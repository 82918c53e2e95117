"""GRPO rewards in TRL's shape: `pytest tests/unit/test_rewards.py`."""

from __future__ import annotations

import pickle

import pytest

from helpers import rewards


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


class TestCorrectnessReward:
    def test_valid(self) -> None:
        completions = [
            "3 + 4 = 7\n#### 7",  # formatted and right
            "so she has 7 apples",  # right, read leniently
            "The answer is $1,200.",  # right, money in prose
        ]
        assert rewards.correctness_reward(completions, answer=["#### 7", "7", "1200"]) == [1.0, 1.0, 1.0]

    def test_invalid(self) -> None:
        completions = [
            "#### 8",  # formatted, wrong
            "no idea",  # no number at all
            "",  # empty completion
        ]
        assert rewards.correctness_reward(completions, answer=["7", "7", "7"]) == [0.0, 0.0, 0.0]

    def test_mixed_conversational_batch(self) -> None:
        completions = [conv("#### 7"), conv("I think 6")]
        assert rewards.correctness_reward(completions, answer=["7", "7"]) == [1.0, 0.0]

    def test_unreadable_gold_gives_none(self) -> None:
        assert rewards.correctness_reward(["#### 7"], answer=["seven"]) == [None]

    def test_strict_needs_the_marker(self) -> None:
        completions = ["so she has 7 apples", "#### 7", "#### 8"]
        assert rewards.strict_correctness_reward(completions, answer=["7"] * 3) == [0.0, 1.0, 0.0]


class TestFormatReward:
    def test_valid(self) -> None:
        completions = [
            "3 + 4 = 7\n#### 7",  # final line
            "work\n#### $1,200.\n",  # money, period, trailing newline
            "#### -3",  # only the line
        ]
        assert rewards.format_reward(completions) == [1.0, 1.0, 1.0]

    def test_invalid(self) -> None:
        completions = [
            "#### 7\nthen more text",  # marker not on the last line
            "The answer is 7",  # no marker
            "#### seven",  # no number
            "",  # empty
        ]
        assert rewards.format_reward(completions) == [0.0, 0.0, 0.0, 0.0]

    def test_soft_format_accepts_a_marker_anywhere(self) -> None:
        completions = ["#### 7\nthen more text", "The answer is 7", conv("x #### 3 y")]
        assert rewards.soft_format_reward(completions) == [0.5, 0.0, 0.5]


@pytest.mark.parametrize("name", list(rewards.REWARDS))
def test_reward_ignores_extra_kwargs_and_returns_one_value_per_completion(name: str) -> None:
    reward = rewards.REWARDS[name]
    out = reward(
        prompts=["q1", "q2", "q3"],
        completions=["#### 7", conv("7"), "x"],
        answer=["7", "7", "7"],
        question=["a", "b", "c"],
        trainer_state=None,
    )
    assert len(out) == 3 and all(v is None or isinstance(v, float) for v in out)


@pytest.mark.parametrize("name", list(rewards.REWARDS))
def test_reward_survives_pickling(name: str) -> None:
    reward = pickle.loads(pickle.dumps(rewards.REWARDS[name]))
    assert reward(completions=["#### 7"], answer=["7"]) == rewards.REWARDS[name](
        completions=["#### 7"], answer=["7"]
    )


def test_registry_returns_functions_by_name() -> None:
    funcs = rewards.get_reward_funcs(["correctness", "format"])
    assert [f.__name__ for f in funcs] == ["correctness_reward", "format_reward"]
    with pytest.raises(ValueError, match="Unknown reward.*'length'"):
        rewards.get_reward_funcs(["length"])


def test_as_text_joins_assistant_messages_only() -> None:
    assert rewards.as_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    assert rewards.as_text("plain") == "plain"
