"""Run profiles: one frozen `RunConfig` per profile, validated and hashed by `resolve`.

The single source of every setting the notebooks use. Notebooks hold only a profile name and optional
overrides (papermill `-p`); `pipeline` writes the resolved config to `outputs/<run>/config.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from helpers.answers import CHECKERS
from helpers.files import type_problem

DATASETS = ("arithmetic", "gsm8k")
# The `teacher` value naming the OpenAI-compatible endpoint of TEACHER_BASE_URL / TEACHER_MODEL.
TEACHER_ENDPOINT = "endpoint"
# What SFT_teacher's rows do with a reasoning teacher's thinking (`distillation`).
THINKING = ("strip", "keep")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run of the series."""

    profile: str
    model: str  # `models.load_model` name: alias, hub id or local checkpoint
    dataset: str  # "gsm8k", or "arithmetic": the generated toy set (`data.make_arithmetic`)
    n_train: int | None  # training problems (None: all)
    n_test: int | None  # test problems (None: all)
    easiest_first: bool  # pick the fewest-step problems instead of a seeded shuffle
    k: int  # samples per problem, for training data and for evaluation
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    filter_checker: str  # which checker decides "correct" when building training data
    max_per_problem: int  # SFT rows kept per problem (distinct correct samples)
    # SFT_teacher (notebook 07): a stronger source sampled k times per training problem, its verified answers kept.
    # a `models.load_model` name, sampled through the series' engine, or "endpoint" (TEACHER_* env)
    teacher: str
    teacher_max_new_tokens: int  # the teacher's token limit (a reasoning teacher thinks first: give it room)
    teacher_thinking: str  # "strip" or "keep" a reasoning teacher's thinking in the SFT rows
    load_in_4bit: bool  # GPU only
    max_seq_length: int
    # Training (notebooks 03-07): LoRA on every linear projection, one set of batch settings for SFT and ORPO (GRPO
    # counts its batch in prompts: grpo_prompts_per_step below).
    lora_r: int
    lora_alpha: int
    batch_size: int  # rows per micro-batch (SFT, ORPO)
    grad_accum: int
    warmup_ratio: float
    logging_steps: int
    save_steps: int  # checkpoint every this many optimizer steps (0: never); a rerun resumes from the last
    sft_lr: float
    sft_epochs: float
    orpo_lr: float
    orpo_beta: float
    orpo_epochs: float
    # GRPO and GRPO_filtered (notebook 06): k completions per prompt, `grpo_prompts_per_step` prompts a step, stopped
    # by the plateau rule (`plateau`) on windows of `grpo_window` prompts
    grpo_lr: float
    grpo_max_rows: int | None  # training problems GRPO may consume (None: all), before early stopping
    grpo_max_completion_length: int
    grpo_prompts_per_step: int
    grpo_window: int  # prompts per window of the plateau rule
    grpo_patience: int  # windows in a row that do not rise beyond the noise before GRPO stops
    grpo_min_prompts: int  # prompts before the plateau rule may stop GRPO
    # pass@k to large k (notebook 09): the base and every variant sampled large_k_n times on a seeded subset of
    # large_k_problems test problems (None, or more than there are: all of them), with 08's engine, prompt and
    # temperature
    large_k_n: int
    large_k_problems: int | None


SMOKE = RunConfig(
    profile="smoke",
    model="smollm2-135m",
    dataset="arithmetic",
    # Token budget (measured on 2 cores with AMX, bf16, 2026-12-05): a toy completion averages 65-85 tokens (counted
    # to the answer line) and some ramble on to max_new_tokens, so a batch takes max_new_tokens decode steps however
    # few it holds. 96, not the study's 128: a quarter fewer decode steps, and of the 31 samples the smoke's SFT
    # sets held at 128, 28 took at most 96 tokens. The series samples train three times (01, 05, the teacher in 07)
    # and test once per variant (08: 10 models x 4 problems x 4, from one engine that takes each variant's weights in
    # about 1.4 s): sized so that `make test`, which runs the whole series twice (once killed at 10 moments), stays
    # near 20 minutes.
    n_train=16,
    n_test=4,
    easiest_first=False,
    k=4,
    temperature=0.7,
    top_p=1.0,
    max_new_tokens=96,  # toy answers need about 40-100 tokens: the rambling ones are cut
    seed=0,
    filter_checker="lenient",
    max_per_problem=2,
    # The CPU has one model, so the smoke's teacher is the base itself drawing its own samples (another seed): it
    # exercises the teacher path, it is not a stronger source. An endpoint teacher is tested against a local server.
    teacher="smollm2-135m",
    teacher_max_new_tokens=96,
    teacher_thinking="strip",
    load_in_4bit=False,
    max_seq_length=1024,
    # Training budget on 2 cores (TRL 1.14.2, LoRA r=8, fp32, measured): SFT about 3-5 s and ORPO about 9 s per
    # step of 4 rows, GRPO about 13-20 s per step of 4 completions. A few steps each (half an epoch of ORPO, 2 GRPO
    # steps): enough to change the weights and exercise every code path, not to learn anything.
    lora_r=8,
    lora_alpha=16,
    batch_size=4,
    grad_accum=1,
    warmup_ratio=0.0,
    logging_steps=1,
    save_steps=0,
    sft_lr=2e-4,
    sft_epochs=1.0,
    orpo_lr=5e-5,
    orpo_beta=0.1,
    orpo_epochs=0.5,
    grpo_lr=5e-6,
    grpo_max_rows=2,
    grpo_max_completion_length=96,
    grpo_prompts_per_step=1,
    grpo_window=1,  # windows of one prompt have no spread to measure: the smoke never stops early (2 prompts)
    grpo_patience=3,
    grpo_min_prompts=2,
    # 09: 10 models x 2 problems x 16 samples, 320 completions of which 08's 80 are reused (240 drawn, about 18k
    # tokens: 7-10 s a model from one engine on 2 cores). Enough to draw every curve and table to k=16, not to
    # decide anything.
    large_k_n=16,
    large_k_problems=2,
)

FULL = RunConfig(
    profile="full",
    model="unsloth/Llama-3.2-1B-Instruct",
    dataset="gsm8k",
    n_train=None,
    n_test=None,
    easiest_first=False,
    k=8,
    temperature=0.8,
    top_p=0.95,
    max_new_tokens=512,
    seed=3407,
    filter_checker="lenient",
    max_per_problem=4,
    # An 8B instruct model through the same vLLM engine (16 GB in bf16: an A100/H100). A reasoning model behind an
    # endpoint: teacher="endpoint" and a larger teacher_max_new_tokens (its thinking counts against it).
    teacher="unsloth/Meta-Llama-3.1-8B-Instruct",
    teacher_max_new_tokens=1024,
    teacher_thinking="strip",
    load_in_4bit=False,
    max_seq_length=1024,
    # Unsloth's notebooks for Llama 3.x: LoRA r=16, alpha=16, SFT lr 2e-4, GRPO lr 5e-6, warm-up 10 %. One epoch
    # of SFT/ORPO data; GRPO may see every training problem once (one prompt x 8 completions per step, as the
    # original study) and stops by the plateau rule (`plateau`): windows of 100 prompts (the mean of 100 groups:
    # a standard error near 0.05 on a total reward of 0-2), no stop before 1,000 prompts, and 5 windows (500
    # prompts) without a rise beyond the noise. The original study's reward flattened near 3k prompts; these
    # sizes are an estimate, not yet measured on a GPU.
    lora_r=16,
    lora_alpha=16,
    batch_size=8,
    grad_accum=1,
    warmup_ratio=0.1,
    logging_steps=10,
    save_steps=200,
    sft_lr=2e-4,
    sft_epochs=1.0,
    orpo_lr=8e-6,
    orpo_beta=0.1,
    orpo_epochs=1.0,
    grpo_lr=5e-6,
    grpo_max_rows=None,
    grpo_max_completion_length=512,
    grpo_prompts_per_step=1,
    grpo_window=100,
    grpo_patience=5,
    grpo_min_prompts=1000,
    # 09, as Yue et al. (2025) measure it: 256 samples on 200 test problems for the base and the 9 variants,
    # 10 x 200 x 256 = 512,000 completions (08's 8 a problem reused: 496,000 drawn). An estimate, not yet measured:
    # at about 200 tokens a completion (512 at most) that is about 100M tokens; a 1B model in vLLM with hundreds
    # of requests in flight makes some 15-30k tok/s on an H100 (LoRA requests slower), so about 1-2 GPU hours
    # there, 3-4 on an A100 and 10+ on a T4 (the colab-t4 profile samples 64 on 50). Halve large_k_problems to
    # halve it; the intervals widen by ~1.4x.
    large_k_n=256,
    large_k_problems=200,
)

# The first GPU run: the whole series with the original study's model on the toy set, a few problems and a few
# steps, to learn in minutes whether the GPU path works. Budget (an estimate, not yet measured on a GPU): samples of
# 16 train problems x 4 three times (01, 05, and the 3B teacher in 07) and 16 test x 4 for 10 models (08), about
# 830 completions of at most 256 tokens, about 140k tokens; SFT/ORPO 2-8 steps each, GRPO and GRPO_filtered 4
# steps each of 2 prompts x 4 completions (fewer for GRPO_filtered if fewer than 8 problems qualify). Most of the time is starting vLLM (5 engines: 01, 05, 06, 07, 08) and loading the models (the 3B
# teacher downloads 6.4 GB once): about 12-15 minutes on a T4 or an H100.
GPU_SMOKE = dataclasses.replace(
    FULL,
    profile="gpu-smoke",
    dataset="arithmetic",
    n_train=16,
    n_test=16,
    k=4,
    max_new_tokens=256,
    max_per_problem=2,
    teacher="unsloth/Llama-3.2-3B-Instruct",
    teacher_max_new_tokens=256,
    batch_size=8,
    warmup_ratio=0.0,
    logging_steps=1,
    save_steps=0,
    orpo_lr=5e-5,
    grpo_max_rows=8,
    grpo_max_completion_length=256,
    grpo_prompts_per_step=2,
    grpo_window=2,
    grpo_patience=3,
    grpo_min_prompts=8,  # the whole budget: the first GPU run checks the path, not the rule
    large_k_n=16,  # 09: 10 x 8 x 16 = 1,280 toy completions, about 110k tokens: a minute on a GPU
    large_k_problems=8,
)

# The CPU study (`make study`): the smoke's model and toy set, sized so that the paired intervals decide. The
# published run (docs/findings.md), on 2 cores with AMX (2026-12-06): 82 minutes for 01-09, within the 90-minute
# budget (01 338 s, part of it beside other processes of mine; 02 12; 03 84; 04 362; 05 870; 06 1962, the two GRPO
# arms 1070 s and 867 s; 07 255; 08 682; 09 372). That machine sampled at 443-705 tok/s; another of the same kind
# made 846 the day before, when 01-09 at the earlier sizes (64 test problems, GRPO stopped after 8 prompts) took
# 37 minutes. The older sampling figures below (fp32, 32 sequences in flight) are the first published run's.
# - Train: 128 problems x k=8, sampled three times (01 the base, 05 SFT_1, 07 the teacher: here the base again with
#   another seed, as in the smoke), 59-88k tokens a pass at 177-248 tok/s: 5.6-7.6 minutes of sampling each. The
#   base is right in 11 % of its samples: 104 SFT rows and 195 ORPO pairs (3 a problem at most) in round 1, 198
#   and 262 in round 2. Hundreds of SFT rows from the base itself would need 300+ problems, three more such passes.
# - Training: SFT 0.4-1 s a row (1-2.5 minutes a variant), ORPO about 2.7 s a pair (9-11 minutes).
# - GRPO and GRPO_filtered: 4 prompts x 8 completions a step, lr 2e-4, 64 prompts at most (GRPO_filtered has the
#   problems the base solves sometimes: 62 of the 128 in the bf16 run of 2026-12-05). Measured on 2 cores with AMX
#   (2026-12-06), the rule switched off: 61-70 s a step (about 2 s a completion: the backward pass over 32
#   completions of up to 128 tokens in fp32, not the sampling, sets it), so about 17 minutes an arm. In that run
#   the format reward's mean went 0.06, 0.16, 0.06, 0.25, 0.25, 0.28 over the first 6 steps (24 prompts) while
#   correctness stayed near 0.1. The first measurement (1 prompt a step, lr 2e-5, 40 prompts) moved format
#   from 0.08 to 0.16: too little to call training. The plateau rule reads windows of 8 prompts (2 steps; a
#   standard error near 0.1 on the total), stops after 3 windows without a rise beyond 2 standard errors, and not
#   before 32 prompts. The published run before this rule stopped GRPO after 8 prompts on windows of 1-2 prompts.
# - GRPO in the published run: 64 prompts, the format reward's window mean 0.09 to 0.92, correctness 0.06-0.20, 2
#   windows rising beyond the noise; GRPO_filtered: 60 prompts (62 qualified, whole steps of 4), stopped by the
#   rule after 56, format 0.09 to 0.78, correctness 0.14 to 0.34.
# - Test: 96 problems x k=8 for 10 models: paired intervals of +-0.05 on pass@1, +-0.09 on maj_half@8 and +-0.11
#   on pass@8 at the widest (64 problems gave +-0.14 on pass@8).
CPU_STUDY = dataclasses.replace(
    SMOKE,
    profile="cpu-study",
    n_train=128,
    n_test=96,
    k=8,
    max_new_tokens=128,
    teacher_max_new_tokens=128,
    max_per_problem=3,
    batch_size=8,
    logging_steps=2,
    save_steps=10,
    orpo_epochs=1.0,
    grpo_lr=2e-4,
    grpo_max_rows=64,
    grpo_max_completion_length=128,
    grpo_prompts_per_step=4,
    grpo_window=8,
    grpo_patience=3,
    grpo_min_prompts=32,
    # 09: 10 models x 16 problems x 32 samples, 5,120 completions of which 3,840 are drawn (08's 8 a problem reused);
    # with 9 models (3,456 drawn): 228k tokens in 6 minutes in bf16 (2 cores with AMX), about twice that in fp32.
    large_k_n=32,
    large_k_problems=16,
)

PROFILES: dict[str, RunConfig] = {
    "smoke": SMOKE,
    # The same steps on GSM8K itself: with the CPU model this stops at 02 ("nothing to train on").
    "smoke-gsm8k": dataclasses.replace(
        SMOKE,
        profile="smoke-gsm8k",
        dataset="gsm8k",
        n_train=8,
        n_test=8,
        easiest_first=True,
        max_new_tokens=200,
    ),
    "cpu-study": CPU_STUDY,
    # The original study's run: every train and test problem, k=8, 16-bit LoRA.
    "full": FULL,
    # Llama 3.2 1B Instruct on a 16 GB T4, sized for a Colab session: 1,000 train x 8, 250 test x 8. In 16 bit
    # (fp16 on a T4): 2.5 GB of weights fit, and 4 bit with vLLM would need the out-of-tree vllm-bnb-plugin,
    # which the GPU set does not install (unsloth_zoo 2026.10.9 raises without it: unsloth_zoo/vllm_utils.py,
    # about line 4526; tests/test_gpu_contract.py checks it).
    # The teacher: Llama 3.2 3B Instruct, 6.4 GB in fp16, sampled in its own process (07) with nothing else on the card.
    # 09 on 50 test problems x 64 samples: 10 x 50 x 64 = 32,000 completions, about 6.4M tokens (an estimate at
    # 200 a completion): about 1 hour at the 1.5-3k tok/s a T4 may give a 1B model in fp16.
    # GRPO on 1,000 prompts: windows of 50 (a standard error near 0.07), no stop before 300 prompts, 4 windows
    # without a rise; an estimate, as for the full profile.
    "colab-t4": dataclasses.replace(
        FULL,
        profile="colab-t4",
        n_train=1000,
        n_test=250,
        teacher="unsloth/Llama-3.2-3B-Instruct",
        grpo_window=50,
        grpo_patience=4,
        grpo_min_prompts=300,
        large_k_n=64,
        large_k_problems=50,
    ),
    "gpu-smoke": GPU_SMOKE,
}
# Profiles that need the Unsloth backend (CUDA + Unsloth): `runs.open_run` refuses them anywhere else.
GPU_PROFILES = ("gpu-smoke", "colab-t4", "full")


FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig))
# Settings that only 09_large_k reads, outside a run's identity (its config hash): a run made before they existed,
# or continued with other values, keeps every other step's outputs, and 09 reruns with the new values, keeping its
# samples (each sample has its own seed, and a larger subset of the test problems contains the smaller one).
LATER_STEP_SETTINGS = ("large_k_n", "large_k_problems")
# Each setting's type, and the settings that may be None ("all"), read from RunConfig's annotations.
TYPES = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}[f.type.removesuffix(" | None")]
    for f in dataclasses.fields(RunConfig)
}
OPTIONAL = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.type.endswith(" | None"))


def _check(cfg: RunConfig) -> None:
    problems = []
    if cfg.dataset not in DATASETS:
        problems.append(f"dataset={cfg.dataset!r} (choose one of: {', '.join(DATASETS)})")
    if cfg.teacher_thinking not in THINKING:
        problems.append(f"teacher_thinking={cfg.teacher_thinking!r} (choose one of: {', '.join(THINKING)})")
    if not cfg.model.strip():
        problems.append(f"model={cfg.model!r} (an alias, a hub id or a checkpoint directory)")
    if not cfg.teacher.strip():
        problems.append(f"teacher={cfg.teacher!r} (a model name, or {TEACHER_ENDPOINT!r})")
    if cfg.filter_checker not in CHECKERS:
        problems.append(f"filter_checker={cfg.filter_checker!r} (choose one of: {', '.join(CHECKERS)})")
    positive = (
        "k",
        "max_new_tokens",
        "max_per_problem",
        "max_seq_length",
        "lora_r",
        "lora_alpha",
        "batch_size",
    )
    positive += (
        "teacher_max_new_tokens",
        "grad_accum",
        "logging_steps",
        "grpo_max_completion_length",
        "grpo_prompts_per_step",
        "grpo_window",
        "grpo_patience",
        "grpo_min_prompts",
        "large_k_n",
    )
    positive += ("sft_lr", "sft_epochs", "orpo_lr", "orpo_beta", "orpo_epochs", "grpo_lr")
    for name in positive:
        if getattr(cfg, name) <= 0:
            problems.append(f"{name}={getattr(cfg, name)} (must be > 0)")
    if cfg.save_steps < 0 or not 0 <= cfg.warmup_ratio < 1:
        problems.append(
            f"save_steps={cfg.save_steps}, warmup_ratio={cfg.warmup_ratio} (need >= 0, 0 <= r < 1)"
        )
    if cfg.large_k_n < cfg.k:
        problems.append(
            f"large_k_n={cfg.large_k_n} < k={cfg.k} (09 samples past the evaluation's k: give k or more)"
        )
    grpo_rows = min(n for n in (cfg.n_train, cfg.grpo_max_rows, 10**9) if n is not None)
    if 0 < grpo_rows < cfg.grpo_prompts_per_step:
        problems.append(
            f"GRPO's {grpo_rows} prompt(s) < grpo_prompts_per_step={cfg.grpo_prompts_per_step} (no GRPO step would "
            f"run: raise grpo_max_rows or n_train, or lower grpo_prompts_per_step)"
        )
    for name in ("n_train", "n_test", "grpo_max_rows", "large_k_problems"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            problems.append(f"{name}={getattr(cfg, name)} (must be >= 1, or None for all)")
        if getattr(cfg, name) is None and cfg.dataset == "arithmetic" and name in ("n_train", "n_test"):
            problems.append(f"{name}=None (the generated toy set has no 'all': give a number)")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        problems.append(f"temperature={cfg.temperature}, top_p={cfg.top_p} (need T >= 0, 0 < top_p <= 1)")
    if problems:
        raise ValueError(f"Invalid settings for profile {cfg.profile!r}: {'; '.join(problems)}.")


def resolve(profile: str, base: RunConfig | None = None, /, **overrides: Any) -> RunConfig:
    """The profile's config (or `base`, an earlier resolution of it) with `overrides` applied, validated.

    An override of None means "keep the value": notebooks pass their knobs as None by default.
    """
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Choose one of: {', '.join(PROFILES)}.")
    fields = FIELDS - {"profile"}
    if "profile" in overrides:
        raise ValueError(
            "The profile is not an override: pass it as --profile (or the notebook's `profile`)."
        )
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown}. Settings: {', '.join(sorted(fields))}.")
    given = {key: value for key, value in overrides.items() if value is not None}
    base = base or PROFILES[profile]
    cfg = dataclasses.replace(base, **{key: check_setting(key, value) for key, value in given.items()})
    _check(cfg)
    return cfg


def check_setting(key: str, value: Any) -> Any:
    """`value` as setting `key` (an int where a float goes becomes that float); a wrong type, a float that is not
    finite or a None where the setting needs a value raises ValueError naming the setting."""
    if value is None and key in OPTIONAL:
        return None
    problem = type_problem(value, TYPES[key])
    if problem:
        raise ValueError(f"Setting {key}={value!r} {problem}.")
    return float(value) if TYPES[key] is float else value


def from_dict(values: dict[str, Any]) -> RunConfig:
    """A config back from `to_dict` output (extra keys such as the hash are ignored). `LATER_STEP_SETTINGS` it
    lacks (a run made before they existed) come from its profile, with at least k samples for 09; any other
    setting missing raises ValueError naming them."""
    later = {}
    if values.get("profile") in PROFILES:
        later = {key: getattr(PROFILES[values["profile"]], key) for key in LATER_STEP_SETTINGS}
        later["large_k_n"] = max(
            later["large_k_n"], values.get("k", 0) if isinstance(values.get("k"), int) else 0
        )
    given = {**later, **{key: value for key, value in values.items() if key in FIELDS}}
    missing = sorted(FIELDS - set(given))
    if missing:
        raise ValueError(f"no value for the setting(s) {missing}")
    return RunConfig(**given)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain JSON types."""
    return dataclasses.asdict(cfg)


def identity(cfg: RunConfig) -> dict[str, Any]:
    """The settings that make a run what it is: all but `LATER_STEP_SETTINGS`."""
    return {key: value for key, value in to_dict(cfg).items() if key not in LATER_STEP_SETTINGS}


def later_settings(cfg: RunConfig) -> dict[str, Any]:
    """The `LATER_STEP_SETTINGS` of a config."""
    return {key: getattr(cfg, key) for key in LATER_STEP_SETTINGS}


def config_hash(cfg: RunConfig) -> str:
    """A short stable hash of a run's `identity`: outputs of two identities never share a run directory (09's
    `LATER_STEP_SETTINGS` may change within one: the pipeline reruns 09 when they do)."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:12]


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two config dicts, with both values."""
    return {key: (a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}
