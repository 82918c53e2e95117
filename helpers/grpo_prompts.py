"""GRPO's prompts: the run's training problems for `GRPO`; for `GRPO_filtered`, only those the base solves
sometimes.

`GRPO_filtered` answers the original study's "GRPO's reward is sparse": a problem the model never solves, or always
does, gives a group of k equal rewards and no gradient. 01 sampled every training problem k times from the base;
the problems with more than 0 and fewer than k right (under the run's filter checker) start with reward spread
by construction, as open-r1 filters its training problems by pass rate.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from helpers import data, filtering
from helpers.runs import Run

FILTERED = "GRPO_filtered"
BASE_SAMPLES = "samples/base_train.jsonl"  # 01's samples of the training problems, which the filter reads


def pass_rates(run: Run) -> pd.DataFrame:
    """Each training problem's right count in 01's samples under the run's filter checker (`filtering.pass_rates`)."""
    graded = run.graded_samples(BASE_SAMPLES, split="train", step="01_sampling")
    return filtering.pass_rates(graded, run.cfg.filter_checker)


def problems(run: Run, name: str = "GRPO") -> pd.DataFrame:
    """The training problems `name` trains on: at most `grpo_max_rows` of them, a whole number of steps of
    `grpo_prompts_per_step` (TRL drops a last, partial step's prompts and would start a second pass instead).

    `GRPO_filtered`'s are those the base solves sometimes; fewer than one step's raise `filtering.NothingToTrainOn`.
    """
    found = run.problems("train").to_pandas()
    if name == FILTERED:
        rates = pass_rates(run)
        sometimes = set(rates.index[rates["sometimes"]])
        found = found[found["id"].isin(sometimes)]
        per_step = run.cfg.grpo_prompts_per_step
        if len(found) < per_step:
            solved = int((rates["c"] == rates["n"]).sum())
            raise filtering.NothingToTrainOn(
                f"Nothing to train {FILTERED} on: of {len(rates)} training problems the base solved {solved} in "
                f"every one of its samples, {len(found)} sometimes and the rest in none ({BASE_SAMPLES}, "
                f"{run.cfg.filter_checker} checker), fewer than one step's {per_step} prompts. Sample more problems "
                "(n_train) or more per problem (k), or lower grpo_prompts_per_step."
            )
    count = min(len(found), run.cfg.grpo_max_rows or len(found))
    return found.head(count - count % run.cfg.grpo_prompts_per_step).reset_index(drop=True)


def rows(run: Run, name: str = "GRPO") -> list[dict[str, Any]]:
    """`name`'s prompts as GRPOTrainer takes them: the chat prompt, the gold answer, and the problem's id (which
    the reward functions receive, and `plateau.GroupRewards` records)."""
    chosen = problems(run, name)
    return [
        {"prompt": data.build_messages(q), "answer": g, "problem_id": i}
        for q, g, i in zip(chosen["question"], chosen["gold"], chosen["id"], strict=True)
    ]
