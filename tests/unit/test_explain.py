"""The notebooks' worked examples, checked against what they explain: the trainers' own tokenization, TRL's
advantage formula, `metrics`. `pytest tests/unit/test_explain.py`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import data, explain, filtering, rewards, runs, trainer_config, training
from helpers.files import write_jsonl

QUESTION = "Tom has 7 apples and gets 5 more. How many apples does Tom have now?"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    return runs.open_run(tmp_path_factory.mktemp("explain") / "run", "smoke")


def test_the_sft_text_is_what_sfttrainer_tokenizes(smollm2, run) -> None:
    model, tokenizer = smollm2
    row = {
        "prompt": data.build_messages(QUESTION),
        "completion": [{"role": "assistant", "content": "#### 12"}],
    }
    shown = explain.trainer_text(tokenizer, row)
    trainer = training.sft_trainer(model, tokenizer, trainer_config.sft_config(run, report_to=[]), [row] * 2)
    example = trainer.train_dataset[0]
    prompt_len = next(i for i, label in enumerate(example["labels"]) if label != -100)  # TRL masks the prompt
    assert f"[prompt: {prompt_len} tokens; no loss on these]\n" in shown
    assert f"[completion: {len(example['input_ids']) - prompt_len} tokens; the loss is on these]\n" in shown
    assert shown.endswith(tokenizer.decode(example["input_ids"][prompt_len:]))
    assert data.render_prompt(tokenizer, QUESTION) in shown  # the prompt sampling sends


def test_the_orpo_text_is_what_orpotrainer_tokenizes_with_its_eos(smollm2, run) -> None:
    model, tokenizer = smollm2
    graded = pd.DataFrame(
        {"problem_id": ["p", "p"], "sample_idx": [0, 1], "completion": ["#### 12", "#### 11"],
         "lenient_correct": [True, False]}
    )  # fmt: skip
    pair = filtering.build_orpo_pairs(graded, {"p": QUESTION})[0]
    shown = explain.trainer_text(tokenizer, pair)
    trainer = training.orpo_trainer(
        model, tokenizer, trainer_config.orpo_config(run, report_to=[]), [pair] * 2
    )
    example = trainer.train_dataset[0]
    n_prompt = len(example["prompt_input_ids"])
    for part in ("chosen", "rejected"):
        n_answer = len(example[f"{part}_input_ids"]) - n_prompt - 1  # ORPOTrainer appended the EOS
        assert f"[{part}: {n_answer} tokens + {tokenizer.eos_token} (added by ORPOTrainer);" in shown
    assert tokenizer.decode(example["chosen_input_ids"][n_prompt:]) in shown


def grpo(**settings) -> object:
    """A real GRPOConfig for the CPU, groups of 4."""
    from trl import GRPOConfig

    base = {"output_dir": "unused", "use_cpu": True, "bf16": False, "per_device_train_batch_size": 4}
    return GRPOConfig(**{**base, "num_generations": 4, **settings})


def rewards_frame(*columns: list[float | None]) -> pd.DataFrame:
    names = ["correctness_reward", "format_reward"][: len(columns)]
    return pd.DataFrame(dict(zip(names, columns, strict=True)), dtype=float)


def test_an_advantage_is_the_reward_minus_the_group_mean_over_the_group_spread() -> None:
    # totals 2, 1, 1, 0: mean 1, sample std sqrt(2/3)
    table = explain.group_advantages(rewards_frame([1, 1, 0, 0], [1, 0, 1, 0]), grpo())
    std = math.sqrt(2 / 3)
    assert table["reward"].tolist() == [2, 1, 1, 0]
    assert table["group_mean"].tolist() == [1] * 4 and table["group_std"].tolist() == pytest.approx([std] * 4)
    assert table["advantage"].tolist() == pytest.approx([1 / (std + 1e-4), 0, 0, -1 / (std + 1e-4)])


def test_a_group_whose_rewards_are_all_equal_has_no_advantage() -> None:
    table = explain.group_advantages(rewards_frame([1, 0, 0, 0, 1, 1, 1, 1], [1] * 8), grpo())
    assert table["group"].tolist() == [0] * 4 + [1] * 4
    assert table["advantage"].tolist()[4:] == [0.0] * 4 and table["group_std"].tolist()[4:] == [0.0] * 4
    assert table["advantage"].tolist()[0] > 0 > table["advantage"].tolist()[1]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"scale_rewards": "none"}, [1, 0, 0, -1]),  # Dr. GRPO: not divided by the spread
        ({"scale_rewards": False}, [1, 0, 0, -1]),  # TRL reads False as "none"
        ({"reward_weights": [2.0, 0.0]}, [1 / (math.sqrt(4 / 3) + 1e-4) * x for x in (1, 1, -1, -1)]),
    ],
)
def test_the_advantage_follows_the_config(settings: dict, expected: list[float]) -> None:
    table = explain.group_advantages(rewards_frame([1, 1, 0, 0], [1, 0, 1, 0]), grpo(**settings))
    assert table["advantage"].tolist() == pytest.approx(expected)


def test_batch_scaling_divides_by_the_whole_batchs_spread() -> None:
    scored = rewards_frame([1, 0, 0, 0, 1, 1, 1, 0])
    table = explain.group_advantages(scored, grpo(scale_rewards="batch"))
    batch_std = np.std([1, 0, 0, 0, 1, 1, 1, 0], ddof=1)
    assert table["advantage"].iloc[0] == pytest.approx((1 - 0.25) / (batch_std + 1e-4))


def test_a_completion_no_reward_could_score_gets_no_advantage_and_no_say_in_the_mean() -> None:
    table = explain.group_advantages(rewards_frame([1, 0, 0, None]), grpo())
    assert table["group_mean"].iloc[0] == pytest.approx(1 / 3) and table["advantage"].iloc[3] == 0.0


def test_the_spread_is_trls_nanstd() -> None:
    import torch
    from trl.trainer.utils import nanstd

    values = np.array([0.0, 1.0, 1.0, np.nan, 0.5])
    assert explain._sample_std(values) == pytest.approx(float(nanstd(torch.tensor(values))))


def test_groups_must_be_num_generations_long_and_the_default_aggregation() -> None:
    with pytest.raises(ValueError, match="GRPO scores groups of num_generations=4"):
        explain.group_advantages(rewards_frame([1, 0, 0]), grpo())
    with pytest.raises(ValueError, match="follows 'sum_then_normalize'"):
        explain.group_advantages(
            rewards_frame([1, 0, 0, 0]), grpo(multi_objective_aggregation="normalize_then_sum")
        )


def test_score_group_calls_each_reward_as_the_trainer_does() -> None:
    scored = explain.score_group(["3 + 4 = 7\n#### 7", "#### 8"], "7", training.GRPO_REWARDS)
    assert scored.columns.tolist() == ["completion", "correctness_reward", "format_reward"]
    assert scored["correctness_reward"].tolist() == [1.0, 0.0] and scored["format_reward"].tolist() == [
        1.0,
        1.0,
    ]
    assert explain.score_group(["7"], "#### 7", [rewards.correctness_reward])[
        "correctness_reward"
    ].tolist() == [1.0]


@pytest.mark.parametrize(("n", "c"), [(8, 2), (4, 0), (4, 4), (5, 1)])
def test_the_pass_at_k_table_is_the_formula_and_metrics_agrees(n: int, c: int) -> None:
    table = explain.pass_at_k_table(n, c)
    assert table.index.tolist() == list(range(1, n + 1))
    formula = [1 - math.comb(n - c, k) / math.comb(n, k) for k in range(1, n + 1)]
    assert table["1 - C(n-c,k)/C(n,k)"].tolist() == pytest.approx(formula)
    assert table["metrics.pass_at_k"].tolist() == pytest.approx(formula)
    assert table.loc[1, "metrics.pass_at_k"] == pytest.approx(c / n)  # pass@1 is the share correct


def test_the_maj_table_tells_the_two_maj_at_k_apart() -> None:
    table = explain.maj_table(
        [["12", "12", "12", "7"], ["5", "3", "5", "4"], ["18", "18", "20", None], ["7", None, None, None]],
        ["12", "5", "20", "7"],
    )
    assert table["maj_half@4"].tolist() == ["yes", "no", "no", "no", "0.25"]  # 2 of 4 is not more than half
    assert table["maj_vote@4"].tolist() == ["yes", "yes", "no", "yes", "0.75"]  # None never wins the vote
    assert table.loc["problem 3", "most common"] == "18" and table.loc["problem 2", "right"] == "2 of 4"


def graded_rows(problem: str, right: list[bool], preds: list[str]) -> list[dict]:
    return [
        {"problem_id": problem, "sample_idx": i, "completion": f"answer {p} (sample {i})",
         "lenient_correct": r, "pred_lenient": p}
        for i, (r, p) in enumerate(zip(right, preds, strict=True))
    ]  # fmt: skip


def test_same_problem_picks_the_problem_the_variants_differ_on(run) -> None:
    first, second = run.problems("test")["id"][:2]
    base = graded_rows(first, [True, False], ["1", "2"]) + graded_rows(second, [False, False], ["3", "4"])
    grpo = graded_rows(first, [True, False], ["1", "5"]) + graded_rows(second, [True, True], ["9", "9"])
    write_jsonl(run.path("eval/samples_base.jsonl"), base)
    write_jsonl(run.path("eval/samples_GRPO.jsonl"), grpo)
    same = explain.same_problem(run, ["base", "SFT_1", "GRPO"])  # SFT_1 has no file: left out
    test = run.problems("test").to_pandas().set_index("id")
    assert (same.problem_id, same.question, same.gold) == (
        second,
        test.loc[second, "question"],
        test.loc[second, "gold"],
    )
    assert same.table.to_dict("index") == {
        "base": {"right": "0 of 2", "answers read": "3, 4"},
        "GRPO": {"right": "2 of 2", "answers read": "9, 9"},
    }
    assert "--- GRPO, sample 0 ---\nanswer 9 (sample 0)" in str(same)


def test_same_problem_without_evaluation_files_names_the_step(tmp_path: Path) -> None:
    empty = runs.open_run(tmp_path / "run", "smoke")
    with pytest.raises(FileNotFoundError, match="Run 08's sampling cell"):
        explain.same_problem(empty, ["base"])


def test_trainer_view_shows_the_fields_the_trainer_gets_then_its_text(smollm2) -> None:
    tokenizer = smollm2[1]
    row = {
        "prompt": data.build_messages(QUESTION),
        "completion": [{"role": "assistant", "content": "#### 12"}],
    }
    shown = explain.trainer_view(tokenizer, [{**row, "problem_id": "p", "sample_idx": 3}], "sft")
    fields = shown.split("\n\nThe text it tokenizes:\n")[0].removeprefix("The fields the trainer is given:\n")
    assert json.loads(fields) == row  # lineage fields (problem_id, sample_idx) are not given to the trainer
    assert shown.endswith(explain.trainer_text(tokenizer, row))
    assert explain.trainer_view(tokenizer, [], "orpo") == "No ORPO rows to show: the filter kept none."
