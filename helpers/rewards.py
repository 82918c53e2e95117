"""GRPO reward functions in TRL's shape: `f(prompts, completions, answer, **kwargs) -> list[float | None]`.

Completions may be plain strings or conversational (`[{"role": "assistant", "content": ...}]`). Rewards do
no I/O and never print; the grading itself lives in `answers`, so the reward and the evaluation agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from helpers import answers

Reward = Callable[..., list[float | None]]

# A final line `#### <number>` with nothing after it but whitespace (the format the system prompt asks for).
FINAL_LINE_RE = re.compile(r"(?:^|\n)[ \t]*####[ \t]*" + answers.NUMBER_PATTERN + r"[ \t]*\.?\s*\Z")


def as_text(completion: str | list[dict[str, str]]) -> str:
    """The assistant text of a plain or conversational completion."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion if message.get("role") == "assistant")


def gold_number(answer: str) -> str | None:
    """The gold number from a GSM8K solution (`... #### 72`) or a bare number (`72`); None if unreadable."""
    return answers.extract_strict(answer) if answers.MARKER in answer else answers.normalize_number(answer)


def graded_answer(text: str, solution: str, strict: bool = False) -> float | None:
    """1.0 when the answer read from `text` (lenient reading, or `strict`: the last `####` line) equals the gold
    number of `solution`, else 0.0; None when the gold cannot be read.

    >>> graded_answer("so 3 + 4 = 7", "#### 7"), graded_answer("so 3 + 4 = 7", "7", strict=True)
    (1.0, 0.0)
    """
    gold = gold_number(solution)
    if gold is None:  # an unreadable gold skips the example instead of mislabelling it
        return None
    pred = answers.extract_strict(text) if strict else answers.extract_lenient(text)
    return float(answers.is_correct(pred, gold))


def correctness_reward(completions: list, answer: list[str], **kwargs) -> list[float | None]:
    """1.0 when the lenient reading of the completion equals the gold answer, else 0.0 (None: no gold).

    >>> correctness_reward(["so 3 + 4 = 7", "#### 8"], answer=["#### 7", "7"])
    [1.0, 0.0]
    """
    return [graded_answer(as_text(c), gold) for c, gold in zip(completions, answer, strict=True)]


def strict_correctness_reward(completions: list, answer: list[str], **kwargs) -> list[float | None]:
    """1.0 when the number after the last `####` equals the gold answer, else 0.0 (None: no gold).

    >>> strict_correctness_reward(["so 3 + 4 = 7", "#### 7"], answer=["7", "7"])
    [0.0, 1.0]
    """
    return [graded_answer(as_text(c), gold, strict=True) for c, gold in zip(completions, answer, strict=True)]


def format_reward(completions: list, **kwargs) -> list[float]:
    """1.0 when the completion ends with a `#### <number>` line, else 0.0.

    >>> format_reward(["3 + 4 = 7\\n#### 7", "#### 7 apples, I think", "7"])
    [1.0, 0.0, 0.0]
    """
    return [float(FINAL_LINE_RE.search(as_text(c)) is not None) for c in completions]


def soft_format_reward(completions: list, **kwargs) -> list[float]:
    """0.5 when a `####` marker followed by a number appears anywhere, else 0.0.

    >>> soft_format_reward(["#### 7 apples, I think", "the answer is 7"])
    [0.5, 0.0]
    """
    return [0.5 * (answers.extract_strict(as_text(c)) is not None) for c in completions]


REWARDS: dict[str, Reward] = {
    "correctness": correctness_reward,
    "strict_correctness": strict_correctness_reward,
    "format": format_reward,
    "soft_format": soft_format_reward,
}


def get_reward_funcs(names: list[str]) -> list[Reward]:
    """Reward functions by name, in order, for `GRPOTrainer(reward_funcs=...)`."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"Unknown reward(s) {unknown}. Choose from: {', '.join(REWARDS)}.")
    return [REWARDS[n] for n in names]
