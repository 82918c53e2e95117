"""The run directory `outputs/<run>/`: its layout, its config, atomic writes, and the problems of a run.

Every notebook opens its run with `open_run`, which writes `config.json` on first use and refuses a run
directory made with other settings. Executing notebooks in order is `pipeline`'s job.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

from helpers import accelerator, config, data, run_lock, sampling
from helpers.files import BadInput, atomic_write_text, read_json_object, sweep_temporaries

log = logging.getLogger(__name__)

SUBDIRS = ("samples", "datasets", "models", "eval", "figures", "tb", "executed")
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Run:
    """An open run directory and its resolved config."""

    root: Path
    cfg: config.RunConfig

    def path(self, relative: str) -> Path:
        """A path inside the run directory (parents created)."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def require(self, relative: str, step: str) -> Path:
        """An artifact an earlier step wrote; missing, it names the notebook to run first."""
        target = self.root / relative
        if not target.exists():
            raise FileNotFoundError(
                f"No {relative} in {self.root}. Run {step} first "
                f"(python -m helpers.pipeline run --profile {self.cfg.profile} --run-dir {self.root} "
                f"--only {step[:2]})."
            )
        return target

    def problems(self, split: str) -> datasets.Dataset:
        """The run's train or test problems: the toy set or GSM8K, sized by the profile."""
        return load_problems(self.cfg, split)

    def questions(self, split: str) -> dict[str, str]:
        """Problem id -> question text for a split."""
        problems = self.problems(split)
        return dict(zip(problems["id"], problems["question"], strict=True))

    def sample(
        self,
        problems: datasets.Dataset,
        relative: str,
        adapter: str | None = None,
        model: tuple[Any, Any] | None = None,
        isolated: bool = True,
        k: int | None = None,
    ) -> pd.DataFrame:
        """k samples per problem (`k`, by default the run's) with the run's settings into `relative` (resumable),
        graded.

        `model`: a loaded engine to reuse (one that serves LoRA takes `adapter` as a LoRA request); by default
        the run's model is loaded for this call. `isolated`: a vLLM engine of our own lives in a child process.
        On a GPU it keeps its memory until its process ends; on the CPU it pins this process's threads (torch
        then trains on one core) and reseeds it. Notebooks that train after sampling need that; 08 does not.
        """
        c = self.cfg
        isolated = isolated and model is None and sampling.choose_backend() != "transformers"
        return (sampling.sample_isolated if isolated else sampling.sample)(
            model or c.model,
            problems,
            k=k or c.k,
            temperature=c.temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            seed=c.seed,
            out_path=self.path(relative),
            adapter=adapter,
            load_in_4bit=c.load_in_4bit,
            max_seq_length=c.max_seq_length,
        )

    def graded_samples(self, relative: str, split: str, step: str) -> pd.DataFrame:
        """An earlier step's samples, graded against the split's gold answers; a file without one is refused."""
        path = self.require(relative, step)
        samples = sampling.read_samples(path)
        if samples.empty:
            raise BadInput(
                f"{path} holds no samples. Delete it and run {step} again (python -m helpers.pipeline run "
                f"--profile {self.cfg.profile} --run-dir {self.root} --only {step[:2]})."
            )
        problems = self.problems(split)
        return sampling.grade_samples(samples, dict(zip(problems["id"], problems["gold"], strict=True)))

    def describe(self) -> str:
        """One line naming the data set, model and sizes, shown at the top of every notebook."""
        c = self.cfg
        name = "generated arithmetic toy set" if c.dataset == "arithmetic" else "GSM8K"
        return (
            f"run {self.root} | profile {c.profile} | data: {name} ({c.n_train or 'all'} train, "
            f"{c.n_test or 'all'} test) | model {c.model} | k={c.k}, T={c.temperature}, "
            f"max_new_tokens={c.max_new_tokens} | config {config.config_hash(c)}"
        )


class ConfigMismatch(ValueError):
    """A run directory was made with other settings than the ones asked for."""


def read_config(path: Path) -> dict[str, Any] | None:
    """The settings in a run's `config.json` (None: there is none yet), checked: a JSON object whose settings
    have their types and, all present (09's may be missing: `config.from_dict`), are valid and match its
    `config_hash`. Anything else raises `BadInput` naming the file and the key; a file lacking settings is left to
    `open_run` to refuse (an older version's)."""
    if not path.exists():
        return None
    fix = f"Restore it, or use a new run directory (or delete {path.parent} to start over)."
    if not path.is_file():
        raise BadInput(f"{path} is not a file. {fix}")
    found = read_json_object(path, fix, "an object of settings")
    try:
        for key in sorted(config.FIELDS & set(found)):
            config.check_setting(key, found[key])
        if not re.fullmatch(r"[0-9a-f]{12}", str(found.get("config_hash"))):
            raise ValueError(f"config_hash={found.get('config_hash')!r}, not the hash of its settings.")
        if set(found) >= config.FIELDS - set(config.LATER_STEP_SETTINGS):
            cfg = config.resolve(found["profile"], config.from_dict(found))
            if config.config_hash(cfg) != found["config_hash"]:
                raise ValueError(
                    f"its settings do not match its config_hash {found['config_hash']!r} (edited by hand?)."
                )
    except ValueError as err:
        raise BadInput(f"{path}: {err} {fix}") from err
    return found


def load_problems(cfg: config.RunConfig, split: str) -> datasets.Dataset:
    """Train or test problems for a config: the generated toy set, or a GSM8K subset."""
    if split not in data.SPLITS:
        raise ValueError(f"Unknown split {split!r}. Choose one of: {', '.join(data.SPLITS)}.")
    n = cfg.n_train if split == "train" else cfg.n_test
    if cfg.dataset == "arithmetic":
        return data.make_arithmetic(n, seed=cfg.seed, split=split)
    return data.select(data.load_gsm8k(split), n, seed=cfg.seed, easiest_first=cfg.easiest_first)


def open_run(
    run_dir: str | os.PathLike,
    profile: str,
    overrides: dict[str, Any] | None = None,
    read_only: bool = False,
    **knobs: Any,
) -> Run:
    """Open (or create) a run directory for `profile` with `overrides` and a notebook's `knobs` applied.

    A GPU profile (`config.GPU_PROFILES`) is refused where the Unsloth backend cannot run, saying why.
    The first call writes `config.json`. Later calls start from that config, so a notebook run alone picks up
    the run's settings; a setting given that differs from it is refused, naming the keys and the fix, except 09's
    `config.LATER_STEP_SETTINGS`, which are written into it (the run keeps its other outputs; 09 reruns).
    This process becomes the run's one writer (`run_lock`) once the settings check out, and sweeps away what
    writes cut off by a kill left; `read_only` opens an existing run to look at, beside a writer, and writes
    nothing. A kernel that opened a run holds it until the kernel shuts down.
    """
    root = Path(run_dir).resolve()
    config_path = root / CONFIG_FILE
    found, cfg = _settings(root, profile, {**(overrides or {}), **knobs})
    if read_only:
        if found is None:
            raise FileNotFoundError(
                f"No run in {root} (no {CONFIG_FILE}) to look at: run the pipeline first."
            )
        return Run(root, cfg)
    root.mkdir(parents=True, exist_ok=True)
    held_before = run_lock.holds(root)
    run_lock.acquire(root)
    try:
        if read_config(config_path) != found:  # another writer made or changed the run after our look: again
            return open_run(run_dir, profile, overrides, **knobs)
        sweep_temporaries(root)
        if found is None:
            for sub in SUBDIRS:
                (root / sub).mkdir(parents=True, exist_ok=True)
        later = config.later_settings(cfg)
        if found is None or any(key not in found or found[key] != value for key, value in later.items()):
            started = config_path.stat().st_mtime if found is not None else 0.0
            wanted = {**config.to_dict(cfg), "config_hash": config.config_hash(cfg)}
            atomic_write_text(config_path, json.dumps(wanted, indent=2) + "\n")
            if found is not None:  # settings only 09 reads: the run keeps its outputs, 09 reruns with these
                log.info("%s: 09's settings are now %s", config_path, later)
                # its time stays the run's start (`study.publish` checks the commit against it)
                os.utime(config_path, (started, started))
    except BaseException:
        if not held_before:
            run_lock.release(root)
        raise
    return Run(root, cfg)


def _settings(
    root: Path, profile: str, given: dict[str, Any]
) -> tuple[dict[str, Any] | None, config.RunConfig]:
    """The run's `config.json` (None for a new run) and the config `given` makes of it; refused if they differ."""
    if profile in config.GPU_PROFILES:
        accelerator.require_gpu(f"Profile {profile!r}")  # never a silent fall-back to the CPU backend
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"Run directory {root} is a file. Pass a directory path (e.g. outputs/smoke)."
        )
    config_path = root / CONFIG_FILE
    found = read_config(config_path)
    if found is not None and found.get("profile") != profile:
        raise ConfigMismatch(
            f"{root} was made with other settings (profile: {found.get('profile')!r} -> {profile!r}). Outputs of "
            "two configs are never mixed: use a new run directory, or rerun the pipeline with --force."
        )
    # 09's settings are not the run's identity: given, or from the profile (`config.from_dict`)
    later = set(config.LATER_STEP_SETTINGS)
    lacking = sorted(config.FIELDS - later - set(found)) if found is not None else []
    if lacking:
        raise ConfigMismatch(
            f"{config_path} was written by an earlier version of the series: it lacks the settings {lacking}, added "
            "since. Outputs of two versions are never mixed: use a new run directory, or rerun the pipeline with "
            "--force to replace this run (the old one is kept beside it as <run>.replaced-<hash>; `make smoke` "
            "takes RUN_DIR=outputs/<another>)."
        )
    cfg = config.resolve(profile, config.from_dict(found) if found is not None else None, **given)
    if found is not None:
        wanted = {**config.identity(cfg), "config_hash": config.config_hash(cfg)}
        differing = config.diff({key: value for key, value in found.items() if key not in later}, wanted)
        if differing:
            details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in _rows(differing))
            raise ConfigMismatch(
                f"{root} was made with other settings ({details}). Outputs of two configs are never mixed: "
                "use a new run directory, or rerun the pipeline with --force to replace this run."
            )
    return found, cfg


def _rows(differing: dict[str, tuple[Any, Any]]) -> list[tuple[str, Any, Any]]:
    return [(key, old, new) for key, (old, new) in differing.items() if key != "config_hash"]
