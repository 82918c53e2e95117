"""When GRPO stops, and whether it trained: its rewards per group, and the plateau rule on windows of groups.

GRPO scores the k completions of each prompt (a *group*). `GroupRewards` wraps the reward functions the trainer
calls and keeps one row per group: the prompt's number and problem id, the optimizer step, each reward's mean over
the group, the total's mean, and whether the group's rewards were all equal (*zero spread*: no advantage, no gradient), for the
total and for each reward alone. `models/<NAME>/groups.csv` holds those rows.

The plateau rule (`judge`), read on windows of prompts, not logging steps:

1. A *window* is `window` consecutive prompts. Its reward is the mean over its prompts of each group's mean total
   reward; its standard error is the spread of those group means over the square root of `window`.
2. The first window is the *reference*. A later window *rises* when its reward exceeds the reference's by more than
   `Z` (2) standard errors of the difference, sqrt(se^2 + se_ref^2), the noise of both windows; a window that
   rises becomes the reference.
3. GRPO stops once `patience` windows in a row have not risen, and never before `min_prompts` prompts.

So "the reward has flattened" means: over `patience` windows, no rise beyond the windows' own noise. A rise too
slow for one window to show accumulates against the reference until it shows. Logging windows of 1-2 prompts (the
rule before this one) compared noise with noise and stopped a run that never started. Each comparison alone calls
a flat reward risen about 2-4 % of the time (a one-sided 2-standard-error test, the error estimated from `window`
prompts); a long run makes many, so a rise or two in a long flat run can be chance: read the windows, not only
the count. A window of one prompt has no spread to estimate, so there any increase counts as a rise (the smoke
profile's windows, which exercise the code, not the rule).

An arm *did not train* when no window rose above the first (`did_not_train`), whether the rule stopped it or its
prompts ran out: the weights moved, the reward did not beyond its noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers import metrics

Z = 2.0  # standard errors of the difference a window must rise by
TOTAL = "reward"  # the groups' column of the total reward (TRL's name in its log)


def _spread_zero(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size == 0 or np.ptp(finite) == 0)


class GroupRewards:
    """Records each group's rewards as the trainer computes them: wrap every reward function with `wrap`.

    The trainer scores its generation batch with each reward function in turn, prompts in order, each prompt's k
    completions side by side (TRL's `RepeatSampler`); a group is complete once every function has scored it.
    `weights`: the trainer's `reward_weights` (None: 1 each), as it sums the total. One process: with several,
    each would record only its own share of the batch.
    """

    def __init__(self, names: Sequence[str], k: int, weights: Sequence[float] | None = None) -> None:
        self.names, self.k = list(names), k
        self.weights = np.asarray(weights if weights is not None else [1.0] * len(self.names), dtype=float)
        self.pending: dict[str, list[float]] = {name: [] for name in self.names}
        self.steps: list[int | None] = []
        self.ids: list[str | None] = []
        self.rows: list[dict[str, Any]] = []

    def wrap(self, func: Callable[..., list[float | None]]) -> Callable[..., list[float | None]]:
        """`func`, recording what it returns; same name, so the trainer logs it as before."""
        name = func.__name__
        if name not in self.pending:
            raise ValueError(f"{name} is not one of the recorded rewards ({', '.join(self.names)}).")

        @functools.wraps(func)
        def recorded(*args: Any, **kwargs: Any) -> list[float | None]:
            values = func(*args, **kwargs)
            state, ids = kwargs.get("trainer_state"), kwargs.get("problem_id")
            self._add(name, values, None if state is None else int(state.global_step) + 1, ids)
            return values

        return recorded

    def _add(
        self, name: str, values: list[float | None], step: int | None, ids: list[str] | None = None
    ) -> None:
        self.pending[name] += [math.nan if v is None else float(v) for v in values]
        if name == self.names[0]:
            self.steps += [step] * len(values)
            self.ids += list(ids) if ids is not None else [None] * len(values)
        whole = min(len(v) for v in self.pending.values()) // self.k * self.k
        if whole == 0:
            return
        scores = np.array([self.pending[n][:whole] for n in self.names]).T.reshape(
            -1, self.k, len(self.names)
        )
        for index, group in enumerate(scores):
            total = np.nansum(group * self.weights, axis=1)
            first = index * self.k
            row: dict[str, Any] = {
                "prompt": len(self.rows) + 1,
                "problem_id": self.ids[first],
                "step": self.steps[first],
            }
            row[TOTAL] = float(total.mean())
            row["zero_spread"] = _spread_zero(total)
            for column, name in enumerate(self.names):
                row[name] = (
                    float(np.nanmean(group[:, column])) if np.isfinite(group[:, column]).any() else math.nan
                )
                row[f"{name}_zero_spread"] = _spread_zero(group[:, column])
            self.rows.append(row)
        for n in self.names:
            del self.pending[n][:whole]
        del self.steps[:whole]
        del self.ids[:whole]

    def columns(self) -> list[str]:
        """The columns of `frame`, in order."""
        each = [c for name in self.names for c in (name, f"{name}_zero_spread")]
        return ["prompt", "problem_id", "step", TOTAL, "zero_spread", *each]

    def frame(self) -> pd.DataFrame:
        """One row per complete group, in training order (no row, with the same columns, before any)."""
        return pd.DataFrame(self.rows, columns=self.columns())


@dataclass(frozen=True)
class Verdict:
    """The rule's reading of the groups so far: its windows, the reference, the rises and whether to stop."""

    windows: pd.DataFrame  # one row per complete window: end (prompts so far), reward, se, rises, reference
    rises: int  # windows that rose above the reference (0: the reward never rose beyond the noise)
    stale: int  # windows in a row, up to the last, that have not risen
    stop: bool


def windows(groups: pd.DataFrame, size: int, column: str = TOTAL) -> pd.DataFrame:
    """The complete windows of `size` prompts: where each ends (prompts so far), the mean of `column` over its
    groups and its standard error (0 for a window of one prompt, which has no spread to measure)."""
    n = len(groups) // size
    values = groups[column].to_numpy(dtype=float)[: n * size].reshape(n, size) if n else np.empty((0, size))
    se = values.std(axis=1, ddof=1) / math.sqrt(size) if size > 1 else np.zeros(n)
    return pd.DataFrame({"end": np.arange(1, n + 1) * size, "reward": values.mean(axis=1), "se": se})


def rule_text(window: int, patience: int, min_prompts: int) -> str:
    """The plateau rule in words, with a run's settings filled in."""
    return (
        f"1. A window is {window} consecutive prompt(s). Its reward is the mean over them of each group's mean total "
        f"reward; its standard error is the spread of those means over sqrt({window}) (none for one prompt: "
        "any increase then counts as a rise).\n"
        "2. The first window is the reference. A later window rises when it beats the reference by more than "
        f"{Z:g} standard errors of the difference (the noise of both windows); a window that rises becomes the "
        "reference.\n"
        f"3. Training stops once {patience} windows in a row have not risen, and not before {min_prompts} prompts.\n"
        "An arm in which no window ever rose did not train."
    )


def judge(groups: pd.DataFrame, window: int, patience: int, min_prompts: int) -> Verdict:
    """The plateau rule (the module's docstring) on the groups recorded so far."""
    found = windows(groups, window)
    reference, stale, rises = 0, 0, 0
    rose, references = [False] * len(found), [0] * len(found)
    for i in range(1, len(found)):
        ref = found.iloc[reference]
        noise = Z * math.hypot(found["se"].iloc[i], ref["se"])
        if found["reward"].iloc[i] - ref["reward"] > noise:
            reference, stale, rises, rose[i] = i, 0, rises + 1, True
        else:
            stale += 1
        references[i] = reference
    found = found.assign(
        rises=rose, reference=[int(found["end"].iloc[r]) for r in references] if len(found) else []
    )
    stop = stale >= patience and len(groups) >= min_prompts
    return Verdict(found, rises, stale, stop)


def did_not_train(compute: dict[str, Any] | None) -> str | None:
    """Why a GRPO arm did not train, from its manifest's compute record (`training.train_grpo`), or None when it
    did, or when the record cannot tell (a record without the rule's reading)."""
    if not compute or "reward_rises" not in compute:
        return None
    if compute["reward_rises"] > 0:
        return None
    used, available = compute["prompts_consumed"], compute["prompts_available"]
    size = f"{compute['window']} prompt{'s' if compute['window'] != 1 else ''}"
    ended = (
        f"stopped by its plateau rule after {used} of {available} prompts"
        if compute.get("stopped_early_at_step") is not None
        else f"all {used} of its prompts used"
    )
    if compute.get("windows", 0) < 2:
        return f"{ended}: fewer than two windows of {size}, so no rise could be measured"
    return (
        f"{ended}; its mean reward over windows of {size} never rose above its first window's beyond the "
        f"noise (first {compute['first_window_reward']:.2f}, last {compute['last_window_reward']:.2f})"
    )


def zero_spread_share(
    groups: pd.DataFrame, column: str = "zero_spread", n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The share of groups with zero spread in `column` (the total reward's, or `<reward>_zero_spread` for one
    reward alone), with a 95 % bootstrap interval over groups, and their number."""
    values = groups[column].to_numpy(dtype=float)
    if values.size == 0:
        raise ValueError("no group was recorded")
    low, high = metrics.bootstrap_ci(values, n_boot, seed)
    return {"share": float(values.mean()), "lo": low, "hi": high, "groups": int(values.size)}


def share_difference(
    first: pd.DataFrame, second: pd.DataFrame, n_boot: int = 1000, seed: int = 0, column: str = "zero_spread"
) -> tuple[float, float, float]:
    """The share of zero-spread groups in `first` minus that in `second`, with a 95 % bootstrap interval, each
    arm's groups resampled apart (two arms train on different prompts: nothing pairs them)."""
    a, b = (g[column].to_numpy(dtype=float) for g in (first, second))
    rng = np.random.default_rng(seed)
    diffs = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1) - b[
        rng.integers(0, b.size, size=(n_boot, b.size))
    ].mean(axis=1)
    low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
    return float(a.mean() - b.mean()), low, high
