"""One prompt, token for token, in sampling and in the SFT, ORPO and GRPO trainers.

Llama 3.2's chat template writes today's date unless given one, and TRL's trainers render prompts themselves.
This test gives the CPU model a small Llama-like template that writes `Today Date: {{ date_string }}` (today's
date by default) and a BOS, then compares the prompt tokens each trainer builds with what sampling sends to vLLM.
Run: `.venv/bin/python -m pytest tests/unit/test_prompts.py`
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from helpers import config, data, filtering, models, runs, sampling, trainer_config, training

DATED_TEMPLATE = (
    "{{ bos_token }}{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'system' %}Today Date: {{ date_string }}\n{% endif %}"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = "Tom has 7 apples and gets 5 more. How many apples does Tom have now?"
SMOKE = config.PROFILES["smoke"]


def series_config(tmp_path: Path, method: str):
    """The trainer config the series builds for `method` (without TensorBoard)."""
    return getattr(trainer_config, f"{method}_config")(runs.Run(tmp_path, SMOKE), "PROMPTS", report_to=[])


@pytest.fixture(scope="module")
def dated() -> tuple:
    """The CPU model with the dated template, loaded (and so pinned) as the series loads every model."""
    model, tokenizer = models.load_model(models.SMOLLM2_ALIAS)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = DATED_TEMPLATE
    return model, data.pin_template_date(tokenizer)


def sampled_ids(tokenizer) -> list[int]:
    """What sampling sends to vLLM."""
    return sampling.prompt_token_ids(tokenizer, data.render_prompt(tokenizer, QUESTION))


def test_the_pinned_template_writes_the_fixed_date(dated) -> None:
    text = data.render_prompt(dated[1], QUESTION)
    assert f"Today Date: {data.PROMPT_DATE}\n" in text and text.startswith(dated[1].bos_token)
    unpinned = copy.deepcopy(dated[1])
    unpinned.chat_template = DATED_TEMPLATE
    assert data.PROMPT_DATE not in unpinned.apply_chat_template(data.build_messages(QUESTION), tokenize=False)
    assert data.pin_template_date(dated[1]).chat_template.count(data.DATE_PIN) == 1  # idempotent


def test_a_template_without_a_date_is_left_alone(smollm2) -> None:
    before = smollm2[1].chat_template
    assert data.pin_template_date(copy.deepcopy(smollm2[1])).chat_template == before


def test_sft_rows_carry_the_sampling_prompt(dated, tmp_path: Path) -> None:
    model, tokenizer = dated
    row = {
        "prompt": data.build_messages(QUESTION),
        "completion": [{"role": "assistant", "content": "5+7=12\n#### 12"}],
    }
    trainer = training.sft_trainer(model, tokenizer, series_config(tmp_path, "sft"), [row] * 2)
    example = trainer.train_dataset[0]
    prompt_len = next(i for i, label in enumerate(example["labels"]) if label != -100)  # TRL masks the prompt
    assert example["input_ids"][:prompt_len] == sampled_ids(tokenizer)


def test_orpo_pairs_carry_the_sampling_prompt(dated, tmp_path: Path) -> None:
    model, tokenizer = dated
    graded = __import__("pandas").DataFrame(
        {"problem_id": ["p", "p"], "sample_idx": [0, 1], "completion": ["#### 12", "#### 11"],
         "lenient_correct": [True, False]}
    )  # fmt: skip
    pairs = filtering.build_orpo_pairs(graded, {"p": QUESTION}) * 2
    trainer = training.orpo_trainer(model, tokenizer, series_config(tmp_path, "orpo"), pairs)
    assert trainer.train_dataset[0]["prompt_input_ids"] == sampled_ids(tokenizer)


def test_grpo_prompts_are_the_sampling_prompt(dated, tmp_path: Path) -> None:
    model, tokenizer = dated
    rows = [{"prompt": data.build_messages(QUESTION), "answer": "12"}] * 2
    trainer = training.grpo_trainer(model, tokenizer, series_config(tmp_path, "grpo"), rows)
    prompt_ids = trainer._tokenize_prompts([rows[0]["prompt"]])[0][0]  # what GRPO generates from (TRL 1.14.2)
    assert list(prompt_ids) == sampled_ids(tokenizer)


def test_an_older_pin_is_replaced_not_stacked(dated) -> None:
    """A tokenizer saved with a template pinned to another date gets exactly one pin, to PROMPT_DATE."""
    old = copy.deepcopy(dated[1])
    old.chat_template = '{%- set date_string = "1 Jan 2020" -%}' + DATED_TEMPLATE
    text = data.render_prompt(data.pin_template_date(old), QUESTION)
    assert f"Today Date: {data.PROMPT_DATE}\n" in text and "1 Jan 2020" not in old.chat_template
    assert old.chat_template.count(data.DATE_PIN) == 1
