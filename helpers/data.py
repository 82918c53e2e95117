"""GSM8K loading, the prompt, and deterministic subsets.

Rows come from a local directory (the shipped copy in `data/gsm8k/`, or `GSM8K_DIR`) or the hub dataset
`openai/gsm8k`; every route gives the same columns. Grading lives in `answers`, sampling in `sampling`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import datasets

from helpers import answers
from helpers.files import BadInput, parse_json, read_utf8

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

# How to mend a GSM8K file that does not read, said by every error about one.
ROW_FIX = "Each line holds one JSON object with a question and an answer: fix the line, or use source='hub'."

# The instruction the calibration scan in shared/calibration used: keep it so that scan stays valid.
SYSTEM_PROMPT = "Solve the math problem step by step. At the end, write the final answer on its own line as '#### <number>'."


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def to_row(raw: Any, row_id: str, where: str) -> dict[str, Any]:
    """A GSM8K record with the project's columns; a malformed record raises `BadInput` naming the row and field."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: row {row_id} is a JSON {type(raw).__name__}, not an object. {ROW_FIX}")
    for field in ("question", "answer"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise BadInput(
                f"{where}: row {row_id} has no text in field '{field}'. Each row needs question+answer."
            )
    gold = answers.extract_strict(raw["answer"])
    if gold is None:
        raise BadInput(
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
    """Rows of a GSM8K-format JSONL file, validated, with stable ids `<split>-<index>`. A malformed line, a
    question asked twice or a file without rows raises `BadInput` naming the file and the line."""
    lines = read_utf8(path, ROW_FIX).split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last row
    rows, asked = [], {}
    for i, line in enumerate(lines):
        row_id = f"{split}-{i:05d}"
        try:
            raw = parse_json(line)
        except ValueError as err:
            raise BadInput(
                f"{path}: row {row_id} (line {i + 1}) is not valid JSON: {err}. {ROW_FIX}"
            ) from err
        rows.append(to_row(raw, row_id, f"{path}, line {i + 1}"))
        first = asked.setdefault(raw["question"], row_id)
        if first != row_id:
            raise BadInput(
                f"{path}, line {i + 1}: row {row_id} asks the question of row {first} again. {ROW_FIX}"
            )
    if not rows:
        raise BadInput(f"{path} holds no rows. {ROW_FIX}")
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
            raise BadInput(
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


# Llama 3.2's chat template writes "Today Date: <the day it runs>" unless given `date_string`, and the trainers
# (TRL's SFT, ORPO and GRPO, Unsloth's SFT data preparation) apply the template themselves without it. A date
# pinned inside the template makes every renderer write the same prompt, on every day a run is resumed.
PROMPT_DATE = "26 Jul 2024"
DATE_PIN = '{%- set date_string = "' + PROMPT_DATE + '" -%}'
PIN_RE = re.compile(r'^\{%- set date_string = "[^"]*" -%\}')


def build_messages(question: str) -> list[dict[str, str]]:
    """The chat for one problem: the system instruction, then the question."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def pin_template_date(tokenizer: Any) -> Any:
    """Fix the date a chat template writes to PROMPT_DATE, in place (idempotent; a template without a date
    is left alone). `models.load_model` applies it, so the trainers render with it too."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and "date_string" in template and not template.startswith(DATE_PIN):
        # A tokenizer saved by an earlier run may hold a pin to another date: replace it, never stack two.
        tokenizer.chat_template = DATE_PIN + PIN_RE.sub("", template)
    return tokenizer


def render_prompt(tokenizer: Any, question: str) -> str:
    """The chat-templated prompt text, ending where the assistant starts to write: the one rendering of a
    problem, token for token what the trainers render from `build_messages` with the same tokenizer."""
    return pin_template_date(tokenizer).apply_chat_template(
        build_messages(question), tokenize=False, add_generation_prompt=True
    )


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


# --- The generated toy set -------------------------------------------------------------------------------
# The CPU model is at chance on GSM8K (shared/calibration), so the smoke profile runs on word problems of one
# to three steps with small numbers, in GSM8K's own shape, which it sometimes solves.
NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Zoe")
ITEMS = ("apples", "coins", "pens", "books", "cards", "stickers", "eggs", "shells")
TOY_TEST_SHARE = 5  # one question in five belongs to the test split, decided by its hash


def _toy_problem(rng: random.Random) -> tuple[str, list[tuple[str, int]]]:
    """A question and its worked steps as (text before the result, result) pairs."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    kind = rng.choices(
        ["add", "sub", "mul", "div", "add_sub", "mul_add", "add_mul_sub"], [3, 3, 3, 2, 2, 2, 1]
    )[0]
    if kind == "add":
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        return q, [(f"{name} has {a}+{b}", a + b)]
    if kind == "sub":
        q = f"{name} has {a + b} {item} and gives {b} to a friend. How many {item} does {name} have left?"
        return q, [(f"{name} has {a + b}-{b}", a)]
    if kind == "mul":
        q = f"There are {a} bags with {b} {item} in each bag. How many {item} are there in total?"
        return q, [(f"There are {a}*{b}", a * b)]
    if kind == "div":
        q = f"{name} shares {a * b} {item} equally among {b} friends. How many {item} does each friend get?"
        return q, [(f"Each friend gets {a * b}/{b}", a)]
    if kind == "add_sub":
        c = min(c, a + b)
        q = f"{name} has {a} {item}, buys {b} more, then gives away {c}. How many {item} are left?"
        return q, [
            (f"After buying, {name} has {a}+{b}", a + b),
            (f"After giving, {name} has {a + b}-{c}", a + b - c),
        ]
    if kind == "mul_add":
        q = f"{name} buys {a} packs of {b} {item} and then finds {c} more. How many {item} does {name} have?"
        return q, [(f"The packs hold {a}*{b}", a * b), (f"With the found ones, {a * b}+{c}", a * b + c)]
    d = rng.randint(1, a + b * c)
    q = (
        f"{name} has {a} {item}. {name} buys {b} boxes with {c} {item} in each box, then gives {d} away. "
        f"How many {item} does {name} have now?"
    )
    return q, [
        (f"The boxes hold {b}*{c}", b * c),
        (f"Together {name} has {a}+{b * c}", a + b * c),
        (f"After giving, {a + b * c}-{d}", a + b * c - d),
    ]


def _toy_split(question: str) -> str:
    digest = hashlib.sha256(question.encode()).digest()
    return "test" if digest[0] % TOY_TEST_SHARE == 0 else "train"


def make_arithmetic(n: int, seed: int, split: str) -> datasets.Dataset:
    """`n` generated word problems in GSM8K's shape and columns, deterministic for (seed, split).

    A question's split is decided by its hash, so train and test never share a question whatever `n` is.

    >>> row = make_arithmetic(1, seed=0, split="train")[0]
    >>> row["answer"].endswith("#### " + row["gold"])
    True
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Choose one of: {', '.join(SPLITS)}.")
    if n < 1:
        raise ValueError(f"make_arithmetic: n={n}; ask for at least one problem.")
    rng, seen, rows = random.Random(seed), set(), []
    for _ in range(1000 * n):  # bounded: the question space holds tens of thousands
        question, steps = _toy_problem(rng)
        if question in seen or _toy_split(question) != split:
            continue
        seen.add(question)
        lines = [f"{text} = <<{text.split(' ')[-1]}={result}>>{result}." for text, result in steps]
        solution = "\n".join(lines) + f"\n#### {steps[-1][1]}"
        rows.append(
            to_row({"question": question, "answer": solution}, f"toy-{split}-{len(rows):05d}", "arithmetic")
        )
        if len(rows) == n:
            return datasets.Dataset.from_list(rows)
    raise ValueError(f"make_arithmetic: could not generate {n} distinct {split} problems; ask for fewer.")
