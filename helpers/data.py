"""GSM8K loading, the prompt, and deterministic subsets.

Rows come from a local directory (the shipped copy in `data/gsm8k/`, or `GSM8K_DIR`) or the hub dataset
`openai/gsm8k`; every route gives the same columns. Grading lives in `answers`, sampling in `sampling`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import datasets

from helpers import answers

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "gsm8k"
# sha256 of the shipped files (also in data/README.md): an edited or truncated copy fails loudly.
SHIPPED_SHA256 = {
    "train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}
COLUMNS = ("id", "question", "answer", "gold", "n_steps")
# GSM8K marks each calculator step as <<48/2=24>>; their count is a cheap difficulty measure.
CALC_RE = re.compile(r"<<[^>]*>>")

# The instruction the calibration scan in shared/calibration used: keep it so that scan stays valid.
SYSTEM_PROMPT = "Solve the math problem step by step. At the end, write the final answer on its own line as '#### <number>'."


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def to_row(raw: dict[str, Any], row_id: str, where: str) -> dict[str, Any]:
    """A GSM8K record with the project's columns; a malformed record raises naming the row and field."""
    for field in ("question", "answer"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise ValueError(
                f"{where}: row {row_id} has no text in field '{field}'. Each row needs question+answer."
            )
    gold = answers.extract_strict(raw["answer"])
    if gold is None:
        raise ValueError(
            f"{where}: row {row_id} field 'answer' has no '#### <number>' final line; GSM8K solutions end in one."
        )
    n_steps = len(CALC_RE.findall(raw["answer"]))
    return {
        "id": row_id,
        "question": raw["question"],
        "answer": raw["answer"],
        "gold": gold,
        "n_steps": n_steps,
    }


def read_jsonl_rows(path: Path, split: str) -> list[dict[str, Any]]:
    """Rows of a GSM8K-format JSONL file, validated, with stable ids `<split>-<index>`."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            row_id = f"{split}-{i:05d}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: row {row_id} (line {i + 1}) is not valid JSON: {err}") from err
            rows.append(to_row(raw, row_id, str(path)))
    return rows


def resolve_source(source: str | os.PathLike | None) -> str | Path:
    """The first route that applies: the argument, `GSM8K_DIR`, the shipped copy, else "hub"."""
    if source is not None:
        return "hub" if str(source) == "hub" else Path(source)
    if os.environ.get("GSM8K_DIR"):
        return Path(os.environ["GSM8K_DIR"])
    if (SHIPPED_DIR / "train.jsonl").exists():
        return SHIPPED_DIR
    return "hub"


def _load_hub(split: str) -> list[dict[str, Any]]:
    try:
        hub = datasets.load_dataset(HUB_ID, HUB_CONFIG, split=split)
    except Exception as err:  # the hub raises many types (connection, offline mode, missing files)
        raise FileNotFoundError(
            f"GSM8K could not be loaded from the hub ({HUB_ID}): {err}. Routes, first that applies: "
            f"load_gsm8k(split, source=<dir with {split}.jsonl>), GSM8K_DIR=<dir>, the shipped copy in "
            f"{SHIPPED_DIR}, or the hub."
        ) from err
    return [to_row(raw, f"{split}-{i:05d}", HUB_ID) for i, raw in enumerate(hub)]


def _load_dir(directory: Path, split: str) -> list[dict[str, Any]]:
    path = directory / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"No GSM8K file at {path}. Give a directory holding {split}.jsonl (source= or GSM8K_DIR), "
            f"use the shipped copy in {SHIPPED_DIR}, or source='hub'."
        )
    if directory.resolve() == SHIPPED_DIR:
        seen = sha256_of(path)
        if seen != SHIPPED_SHA256[path.name]:
            raise ValueError(
                f"{path} is corrupted or edited: sha256 {seen} != {SHIPPED_SHA256[path.name]}. "
                "Restore it with `git checkout data/gsm8k`."
            )
    return read_jsonl_rows(path, split)


def load_gsm8k(split: str, source: str | os.PathLike | None = None) -> datasets.Dataset:
    """GSM8K `split` with columns id, question, answer (full solution), gold (normalized number), n_steps.

    Args:
        source: a directory with `train.jsonl`/`test.jsonl`, or "hub"; None tries `GSM8K_DIR`, the
            shipped `data/gsm8k/`, then the hub dataset `openai/gsm8k` (config `main`).
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown GSM8K split {split!r}. Choose one of: {', '.join(SPLITS)}.")
    route = resolve_source(source)
    rows = _load_hub(split) if route == "hub" else _load_dir(Path(route), split)
    log.info("GSM8K %s: %d rows from %s", split, len(rows), route)
    return datasets.Dataset.from_list(rows)


def build_messages(question: str) -> list[dict[str, str]]:
    """The chat for one problem: the system instruction, then the question."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def render_prompt(tokenizer: Any, question: str) -> str:
    """The chat-templated prompt text, ending where the assistant starts to write."""
    return tokenizer.apply_chat_template(build_messages(question), tokenize=False, add_generation_prompt=True)


def select(ds: datasets.Dataset, n: int | None, seed: int, easiest_first: bool = False) -> datasets.Dataset:
    """A deterministic subset of `n` rows: a seeded shuffle, or the fewest `n_steps` first (ties: shorter
    solution, then file order). `n=None` keeps every row."""
    if n is None:
        n = len(ds)
    if not 0 < n <= len(ds):
        raise ValueError(
            f"select: asked for n={n} rows of a data set with {len(ds)}; use 1..{len(ds)} or None."
        )
    if easiest_first:
        steps, solutions = ds["n_steps"], ds["answer"]
        order = sorted(range(len(ds)), key=lambda i: (steps[i], len(solutions[i]), i))
        return ds.select(order[:n])
    return ds.shuffle(seed=seed).select(range(n))
