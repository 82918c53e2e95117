"""The decode loop: k samples per prompt, continuously batched, in transformers. `sampling` falls back to it
where vLLM's CPU build cannot run (`cpu_engine.unavailable`); its rule for where a completion ends (`replay`) and
its per-sample seeds (`row_seed`) serve every engine.

`generate(num_return_sequences=k)` prefills every prompt k times and keeps finished rows in the batch until
the longest one ends, so a batch of 64 soon runs with a handful of rows. This loop prefills each prompt once
and copies its KV cache to its k rows, drops a row as soon as it writes EOS or finishes its `#### <number>`
line, and refills the freed places with new prompts, so the batch stays full. Each row samples with its own
seeded generator, so its text does not depend on what else shares the batch (up to floating-point
differences between batch shapes). The file store and the vLLM path live in `sampling`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from helpers.answers import NUMBER_PATTERN

# A finished answer line: the marker, a number, anything up to the end of the line.
ANSWER_LINE_RE = re.compile(r"####[ \t]*" + NUMBER_PATTERN + r"[^\n]*\n")


GQA_ATTENTION = "sdpa_gqa"


def sdpa_gqa_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA that keeps grouped KV heads grouped even with a padding mask.

    transformers' `sdpa` copies the whole KV cache to every query head (`repeat_kv`) whenever a mask is
    given, which padded batches always have; on 2 cores that copy was a fifth of each decode step.
    """
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=0.0,
        scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_ATTENTION, sdpa_gqa_attention)
AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)


@contextlib.contextmanager
def gqa_attention(model: Any) -> Iterator[None]:
    """Decode with `sdpa_gqa_attention`, then give the model back its own attention implementation."""
    before = model.config._attn_implementation
    model.set_attn_implementation(GQA_ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@dataclass(frozen=True)
class Request:
    """One sample to draw: which prompt, which sample index, and its seed."""

    prompt_index: int
    sample_idx: int
    seed: int


@dataclass(frozen=True)
class Completion:
    """One finished sample."""

    prompt_index: int
    sample_idx: int
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (EOS), "answer" (after the `####` line) or "length"


@dataclass
class Row:
    """One sequence being decoded."""

    request: Request
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


@dataclass
class Batch:
    """The rows in flight with their KV cache, attention mask, last positions and next-token logits."""

    rows: list[Row]
    cache: Any
    mask: torch.Tensor
    last_pos: torch.Tensor
    logits: torch.Tensor


def row_seed(seed: int, problem_id: str, sample_idx: int) -> int:
    """A stable 63-bit seed per (run seed, problem, sample): reruns and resumes draw the same samples."""
    digest = hashlib.sha256(f"{seed}:{problem_id}:{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def next_tokens(logits: torch.Tensor, rows: list[Row], temperature: float, top_p: float) -> list[int]:
    """Sample one token per row: greedy at temperature 0, else nucleus sampling.

    Each row draws one uniform number from its own generator and inverts the CDF, so the draw is per-row
    reproducible yet the work stays vectorized (a multinomial call per row cost up to 175 ms a step at 128
    rows on 2 cores; this costs a few).
    """
    if temperature == 0:
        return logits.argmax(dim=-1).tolist()
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    cdf = probs.cumsum(dim=-1)
    draws = torch.cat([torch.rand(1, generator=row.generator) for row in rows]).to(cdf.device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, draws.unsqueeze(1), side="right").squeeze(1)  # never a zero-mass token
    return picked.clamp(max=probs.shape[-1] - 1).tolist()


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a completion: the tokenizer's eos and the generation config's."""
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tokenizer.eos_token_id, *(extra if isinstance(extra, list) else [extra])]
    return {int(i) for i in ids if i is not None}


def _advance(row: Row, token: int, eos: set[int], piece: str, max_new_tokens: int) -> None:
    row.tokens.append(token)
    if token in eos:
        row.finish_reason = "stop"
        return
    row.text += piece
    if "\n" in piece and "####" in row.text and ANSWER_LINE_RE.search(row.text):
        row.finish_reason = "answer"
    elif len(row.tokens) >= max_new_tokens:
        row.finish_reason = "length"


def _final_text(row: Row, tokenizer: Any) -> str:
    return tokenizer.decode(row.tokens, skip_special_tokens=True).rstrip("\n")


def replay(token_ids: list[int], tokenizer: Any, eos: set[int], max_new_tokens: int) -> tuple[str, int, str]:
    """(text, n_tokens, finish_reason) of tokens another engine (vLLM) generated, under this loop's rule.

    The loop stops a row at EOS, after its `#### <number>` line, or at `max_new_tokens`; vLLM runs on to EOS.
    Replaying the same rule over vLLM's tokens cuts the text and counts `n_tokens` as the CPU does.
    """
    row = Row(Request(0, 0, 0), torch.Generator())
    for token in token_ids:
        _advance(row, token, eos, tokenizer.decode([token]), max_new_tokens)
        if row.finish_reason is not None:
            break
    return _final_text(row, tokenizer), len(row.tokens), row.finish_reason or "length"


def _prefill(model: Any, tokenizer: Any, prompts: list[str], requests: list[Request]) -> Batch:
    """Run each distinct prompt once and copy its cache to every request on it."""
    order = sorted({r.prompt_index for r in requests})
    enc = tokenizer([prompts[i] for i in order], return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=enc["input_ids"],
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    index = torch.tensor([order.index(r.prompt_index) for r in requests])
    out.past_key_values.batch_select_indices(index)
    rows = [Row(r, torch.Generator().manual_seed(r.seed)) for r in requests]
    return Batch(rows, out.past_key_values, mask[index], positions[index, -1], out.logits[index, -1])


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    pad = [0, 0] * (t.dim() - 1 - dim) + [width - t.shape[dim], 0]
    return F.pad(t, pad)


def _merge(a: Batch, b: Batch) -> Batch:
    """One batch from two, left-padding the shorter cache and mask (padding is masked out)."""
    width = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
        la.keys = torch.cat([_left_pad(la.keys, width, 2), _left_pad(lb.keys, width, 2)])
        la.values = torch.cat([_left_pad(la.values, width, 2), _left_pad(lb.values, width, 2)])
    mask = torch.cat([_left_pad(a.mask, width, 1), _left_pad(b.mask, width, 1)])
    return Batch(
        a.rows + b.rows, a.cache, mask, torch.cat([a.last_pos, b.last_pos]), torch.cat([a.logits, b.logits])
    )


def _keep(batch: Batch, keep: list[int]) -> None:
    """Drop finished rows, then the leading columns that are padding for every row left."""
    index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    batch.cache.batch_select_indices(index)
    batch.rows = [batch.rows[i] for i in keep]
    batch.mask, batch.last_pos = batch.mask[index], batch.last_pos[index]
    lead = int(batch.mask.any(dim=0).int().argmax())
    if lead > 0:
        batch.mask = batch.mask[:, lead:]
        for layer in batch.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]


def _take(queue: list[Request], room: int) -> list[Request]:
    """Up to `room` requests from the front of the queue, whole prompt groups where they fit."""
    taken: list[Request] = []
    while queue and len(taken) < room:
        group = 1
        while group < len(queue) and queue[group].prompt_index == queue[0].prompt_index:
            group += 1
        if taken and len(taken) + group > room:
            break
        n = min(group, room - len(taken))
        taken += queue[:n]
        del queue[:n]
    return taken


def _decode_step(model: Any, batch: Batch, tokens: list[int]) -> None:
    """Feed each row its last token: the cache, mask and positions grow by one, the logits move on."""
    batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(tokens), 1)], dim=1)
    batch.last_pos = batch.last_pos + 1
    out = model(
        input_ids=torch.tensor(tokens, device=batch.mask.device).unsqueeze(1),
        attention_mask=batch.mask,
        position_ids=batch.last_pos.unsqueeze(1),
        past_key_values=batch.cache,
        use_cache=True,
    )
    batch.logits = out.logits[:, -1]


@torch.inference_mode()
def stream_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    requests: list[Request],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    max_rows: int,
) -> Iterator[Completion]:
    """Decode every request against its prompt, yielding each completion as soon as it finishes."""
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token: load the model with helpers.models.load_model.")
    with gqa_attention(model):
        queue = list(requests)
        eos = eos_ids(model, tokenizer)
        batch: Batch | None = None
        while queue or (batch is not None and batch.rows):
            in_flight = len(batch.rows) if batch else 0
            if queue and max_rows - in_flight >= max(1, max_rows // 4):  # refill in chunks: prefill amortizes
                fresh = _prefill(model, tokenizer, prompts, _take(queue, max_rows - in_flight))
                batch = fresh if not in_flight else _merge(batch, fresh)
            tokens = next_tokens(batch.logits, batch.rows, temperature, top_p)
            for row, token in zip(batch.rows, tokens, strict=True):
                _advance(row, token, eos, tokenizer.decode([token]), max_new_tokens)
            for row in batch.rows:
                if row.finish_reason is not None:
                    req = row.request
                    yield Completion(
                        req.prompt_index,
                        req.sample_idx,
                        _final_text(row, tokenizer),
                        len(row.tokens),
                        row.finish_reason,
                    )
            keep = [i for i, row in enumerate(batch.rows) if row.finish_reason is None]
            if len(keep) < len(batch.rows):
                _keep(batch, keep)
            if not batch.rows:
                continue
            _decode_step(model, batch, [tokens[i] for i in keep])
