"""Stand-ins for the GPU path on the CPU: a base model as Unsloth loads it with fast_inference=True, its vLLM
engine, `vllm.SamplingParams` and `unsloth_zoo.vllm_utils.load_lora`.

The model has exactly the attributes the pinned Unsloth gives such a model (tests/test_gpu_contract.py derives
that list from the wheel's source and compares), so code that reaches for something Unsloth does not attach to
a base model (`load_lora` exists only on PEFT models) fails here as it would on a GPU. The engine behaves like
`vllm.LLM.generate`: token prompts, one SamplingParams per prompt, decoding past the answer line to EOS or
`max_tokens`, token ids with the EOS included; it decodes with the CPU model through transformers.
"""

from __future__ import annotations

import itertools
import sys
import types
from typing import Any

import torch

from helpers import models

UNSLOTH_ATTRIBUTES = (
    "vllm_engine",
    "fast_generate",
    "fast_generate_batches",
    "max_seq_length",
    "for_training",
    "for_inference",
    "_old_generate",
    "generate",
    "_unsloth_offload_embedding_mode",
)
OUR_ATTRIBUTES = models.MODEL_TAGS  # set by helpers.models.load_model


class StandInBase:
    """Holds exactly UNSLOTH_ATTRIBUTES and OUR_ATTRIBUTES: reading or setting any other name raises."""

    __slots__ = UNSLOTH_ATTRIBUTES + OUR_ATTRIBUTES


class StandInEngine:
    """`vllm.LLM` on the CPU model: `generate` answers like vLLM and records what it was asked."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer, self.calls = model, tokenizer, []

    @torch.inference_mode()
    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None):  # fmt: skip
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        eos = self.tokenizer.eos_token_id
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = torch.tensor([prompt["prompt_token_ids"]])
            if p.seed is not None:
                torch.manual_seed(p.seed)
            sample = (
                {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p} if p.temperature else {}
            )
            new = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=p.max_tokens, eos_token_id=eos,
                pad_token_id=eos, do_sample=bool(p.temperature), **{k: v for k, v in sample.items() if k != "do_sample"},
            )[0, ids.shape[1]:].tolist()  # fmt: skip
            reason = "stop" if new and new[-1] == eos else "length"
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            outs.append(
                types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(text=text, token_ids=new, finish_reason=reason)]
                )
            )
        return outs


def load_base(model: Any, tokenizer: Any, name: str = "base/model") -> tuple[StandInBase, StandInEngine]:
    """A stand-in Unsloth base (fast_inference=True) over a CPU model, and its engine."""
    engine = StandInEngine(model, tokenizer)
    base = StandInBase()
    base.vllm_engine, base.fast_generate = engine, engine.generate
    base.fast_generate_batches = None
    base.max_seq_length, base.for_training, base.for_inference = 2048, None, None
    base._old_generate, base.generate, base._unsloth_offload_embedding_mode = (
        model.generate,
        model.generate,
        None,
    )
    base.gsm8k_base, base.gsm8k_backend, base.gsm8k_adapter = name, "unsloth", None
    return base, engine


class SamplingParams:
    """vllm.SamplingParams, keyword-only as helpers calls it."""

    def __init__(self, *, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=None) -> None:
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = (
            n,
            temperature,
            top_p,
            max_tokens,
            seed,
        )


_LORA_IDS = itertools.count(1)


def load_lora(model, save_directory, load_tensors=False, lora_request_id=None):
    """unsloth_zoo.vllm_utils.load_lora: needs only the engine; a fresh id per call."""
    assert model.vllm_engine is not None
    lora_id = lora_request_id or next(_LORA_IDS)
    return types.SimpleNamespace(lora_name=str(lora_id), lora_int_id=lora_id, lora_path=save_directory)


def install(monkeypatch: Any) -> None:
    """Put the stand-in `vllm` and `unsloth_zoo.vllm_utils` modules in sys.modules for one test."""
    zoo = types.ModuleType("unsloth_zoo")
    zoo.vllm_utils = types.SimpleNamespace(load_lora=load_lora)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    monkeypatch.setitem(sys.modules, "unsloth_zoo", zoo)
    monkeypatch.setitem(sys.modules, "unsloth_zoo.vllm_utils", zoo.vllm_utils)
