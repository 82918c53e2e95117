"""Worked examples for the notebooks: what a trainer renders from a row, GRPO's group advantages, pass@k and the
two maj@k on a made-up set, and one test problem as several variants answered it.

Each shows a quantity the series computes elsewhere, with the code that computes it there (`metrics`, TRL's
trainers), so that what a learner reads is what runs. Nothing here trains, samples or writes files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers import answers, evaluation, metrics, models, training
from helpers.files import read_jsonl
from helpers.runs import Run

# Added to a group's spread before dividing by it, as TRL does (`advantages / (std_rewards + 1e-4)`).
STD_EPSILON = 1e-4
ANSWER_COLUMNS = ("completion", "chosen", "rejected")


def run_tokenizer(run: Run) -> Any:
    """The tokenizer of the run's model, as sampling and the trainers use it (the template's date pinned)."""
    return models.load_tokenizer(models.resolve_name(run.cfg.model)[1])


def trainer_text(tokenizer: Any, row: dict[str, Any]) -> str:
    """A training row as its trainer renders it: the chat template applied, the prompt and each answer apart,
    with their token counts. The loss covers the answers' tokens, never the prompt's.

    The texts come from TRL's `maybe_apply_chat_template` (trl/data_utils.py), which ORPOTrainer maps over its
    rows; SFTTrainer renders the same two texts and masks the prompt (`completion_only_loss`). ORPOTrainer then
    appends an EOS token to an answer that does not end with one (trl/experimental/orpo/orpo_trainer.py,
    `tokenize_row`): it is shown where it applies.
    """
    from trl.data_utils import maybe_apply_chat_template

    parts = [c for c in ANSWER_COLUMNS if c in row]
    texts = maybe_apply_chat_template({c: row[c] for c in ("prompt", *parts)}, tokenizer)
    prompt_ids = _ids(tokenizer, texts["prompt"])
    blocks = [f"[prompt: {len(prompt_ids)} tokens; no loss on these]\n{texts['prompt']}"]
    for part in parts:
        n = len(_ids(tokenizer, texts["prompt"] + texts[part])) - len(prompt_ids)
        eos = (
            tokenizer.eos_token
            if part != "completion" and not texts[part].endswith(tokenizer.eos_token)
            else ""
        )
        added = f" + {eos} (added by ORPOTrainer)" if eos else ""
        blocks.append(f"[{part}: {n} tokens{added}; the loss is on these]\n{texts[part]}{eos}")
    # A block whose text ends without a line break gets one, so that the next label starts a line of its own.
    return "".join(block if block.endswith("\n") else block + "\n" for block in blocks)


def trainer_view(tokenizer: Any, rows: list[dict[str, Any]], kind: str, index: int = 0) -> str:
    """Row `index` of SFT rows or ORPO pairs (`kind`) as its trainer receives it: the fields it is given, as
    JSON, then the text it tokenizes (`trainer_text`)."""
    if not rows:
        return f"No {kind.upper()} rows to show: the filter kept none."
    fields = json.dumps(training.trainer_row(rows[index], kind), indent=1, ensure_ascii=False)
    text = trainer_text(tokenizer, rows[index])
    return f"The fields the trainer is given:\n{fields}\n\nThe text it tokenizes:\n{text}"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template wrote the special tokens


def score_group(
    completions: list[str], answer: str, reward_funcs: Sequence[Callable[..., list]]
) -> pd.DataFrame:
    """Each completion's reward from each reward function, called as GRPOTrainer calls them (with the gold in
    `answer`). One row per completion, one column per reward, named like the function."""
    scores = {f.__name__: f(completions, answer=[answer] * len(completions)) for f in reward_funcs}
    return pd.DataFrame({"completion": completions, **scores}).astype({name: float for name in scores})


def group_advantages(scored: pd.DataFrame, config: Any) -> pd.DataFrame:
    """GRPO's advantage of each completion, as the trainer with `config` (a `GRPOConfig`) computes it.

    `scored`: one row per completion, in groups of `config.num_generations` (one prompt's completions), with a
    column per reward (`*_reward`, in the trainer's order; NaN where a reward gave None). As in TRL 1.14.2's
    `GRPOTrainer._generate_and_score_completions` (trl/trainer/grpo_trainer.py, "sum_then_normalize"): the
    rewards are summed with `reward_weights`; a completion's advantage is its reward minus its group's mean,
    divided by the group's standard deviation (`scale_rewards="group"`, the default; `"batch"`: the whole
    batch's; `"none"`: not divided) plus 1e-4; the spread is `trl.trainer.utils.nanstd`, the sample standard
    deviation (n - 1). A group whose rewards are all equal has advantages of 0: it teaches nothing.
    """
    if config.multi_objective_aggregation != "sum_then_normalize":
        raise ValueError(
            f"multi_objective_aggregation={config.multi_objective_aggregation!r}: this worked example follows "
            "'sum_then_normalize', TRL's default and the series' setting."
        )
    names = [c for c in scored.columns if c.endswith("_reward")]
    k = config.num_generations
    if not names or len(scored) % k:
        raise ValueError(
            f"group_advantages: {len(scored)} rows with reward columns {names}; GRPO scores groups of "
            f"num_generations={k} completions, each with at least one `*_reward` column."
        )
    weights = np.asarray(config.reward_weights or [1.0] * len(names), dtype=float)
    per_func = scored[names].to_numpy(dtype=float)
    reward = np.where(np.isnan(per_func).all(axis=1), np.nan, np.nansum(per_func * weights, axis=1))
    groups = reward.reshape(-1, k)
    mean = np.repeat(np.nanmean(groups, axis=1), k)
    if config.scale_rewards == "batch":
        std = np.full_like(reward, _sample_std(reward))
    else:  # "group", and "none" (its spread is still logged as `frac_reward_zero_std`)
        std = np.repeat([_sample_std(g) for g in groups], k)
    advantage = reward - mean
    if config.scale_rewards != "none":
        advantage = advantage / (std + STD_EPSILON)
    table = scored.assign(reward=reward, group=np.repeat(np.arange(len(groups)), k), group_mean=mean)
    return table.assign(group_std=std, advantage=np.nan_to_num(advantage, nan=0.0))


def _sample_std(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(np.std(kept, ddof=1)) if kept.size > 1 else 0.0


def pass_at_k_table(n: int, c: int) -> pd.DataFrame:
    """The unbiased pass@k estimator (Chen et al. 2021) worked out for n samples with c correct, k = 1..n.

    pass@k = 1 - C(n-c, k) / C(n, k): one minus the chance that k samples drawn from the n without replacement
    are all wrong. The last column is the series' own `metrics.pass_at_k` (a product form of the same formula).
    """
    rows = []
    for k in range(1, n + 1):
        wrong, every = math.comb(n - c, k), math.comb(n, k)
        rows.append(
            {
                "k": k,
                "C(n-c,k)": wrong,
                "C(n,k)": every,
                "1 - C(n-c,k)/C(n,k)": 1 - wrong / every,
                "metrics.pass_at_k": metrics.pass_at_k(n, c, k),
            }
        )
    return pd.DataFrame(rows).set_index("k")


def maj_table(answers_per_problem: Sequence[Sequence[str | None]], golds: Sequence[str]) -> pd.DataFrame:
    """Both maj@k on a few problems of k answers each: `maj_half@k` (the original study's: right in more than
    half of the k) and `maj_vote@k` (the literature's: the most common answer is right), per problem and, in
    the last row, as the share of problems `metrics` computes."""
    k = len(answers_per_problem[0])
    half, vote = metrics.MAJ_HALF.format(k=k), metrics.MAJ_VOTE.format(k=k)
    rows, counts = [], []
    for preds, gold in zip(answers_per_problem, golds, strict=True):
        right = sum(answers.is_correct(p, gold) for p in preds)
        counts.append(right)
        common = metrics.majority_answer(preds)
        rows.append(
            {
                "answers": ", ".join(str(p) for p in preds),
                "gold": gold,
                "right": f"{right} of {k}",
                half: _yes(right * 2 > k),
                "most common": str(common),
                vote: _yes(answers.is_correct(common, gold)),
            }
        )
    share = {half: metrics.maj_half_at_k(counts, k), vote: metrics.maj_vote_at_k(answers_per_problem, golds)}
    rows.append({column: f"{share[column]:.2f}" if column in share else "" for column in rows[0]})
    return pd.DataFrame(rows, index=[*(f"problem {i + 1}" for i in range(len(golds))), "share of problems"])


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@dataclass(frozen=True)
class SameProblem:
    """One test problem as several variants answered it: per variant, right answers of k, every answer read
    (`table`), and the first completion in full (printed)."""

    problem_id: str
    question: str
    gold: str
    table: pd.DataFrame
    first_completions: dict[str, str]

    def __str__(self) -> str:
        lines = [f"Problem {self.problem_id}: {self.question}", f"Gold answer: {self.gold}"]
        for variant, text in self.first_completions.items():
            lines += ["", f"--- {variant}, sample 0 ---", text]
        return "\n".join(lines)


def same_problem(run: Run, variants: Sequence[str], checker: str = "lenient") -> SameProblem:
    """The test problem on which `variants` differ most (their right answers of k under `checker`; ties: the
    first problem id), from 08's graded files `eval/samples_<variant>.jsonl`; variants without one are left
    out."""
    files = {v: run.path(evaluation.graded_file(v)) for v in variants}
    found = {v: pd.DataFrame(read_jsonl(path)) for v, path in files.items() if path.is_file()}
    if not found:
        raise FileNotFoundError(
            f"No eval/samples_<variant>.jsonl in {run.root} for {', '.join(variants)}. Run 08's sampling cell "
            "(evaluation.evaluate_all) first."
        )
    right = pd.DataFrame({v: s.groupby("problem_id")[f"{checker}_correct"].sum() for v, s in found.items()})
    answered = right.dropna()
    spread = answered.max(axis=1) - answered.min(axis=1)
    problem = str(spread.sort_index().idxmax())  # idxmax takes the first of equal spreads
    rows, first = {}, {}
    for variant, samples in found.items():
        own = samples[samples["problem_id"] == problem].sort_values("sample_idx")
        rows[variant] = {
            "right": f"{int(own[f'{checker}_correct'].sum())} of {len(own)}",
            "answers read": ", ".join(str(p) for p in own[f"pred_{checker}"]),
        }
        first[variant] = own["completion"].iloc[0]
    test = run.problems("test").to_pandas().set_index("id")
    question, gold = (str(test.loc[problem, c]) for c in ("question", "gold"))
    return SameProblem(problem, question, gold, pd.DataFrame(rows).T, first)
