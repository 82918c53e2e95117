"""Where the checkers disagree: for each pair of checkers, how many samples they grade differently (per variant),
and disagreeing samples printed in full so a reader can judge who is right.

A gain that exists under one checker only is a statement about the checker; these tables show how often that
happens. The checkers themselves are `answers` (and `judge`); their hand-labelled accuracy is measured in
`tests/unit/test_labelled.py`.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd

from helpers import answers, metrics
from helpers.files import read_jsonl

ALL = "all"  # the group name for samples without a `variant` column (notebook 02's training samples)
COLUMNS = ("variant", "pair", "n_samples", "differ", "only_first", "only_second")


def _groups(graded: pd.DataFrame) -> pd.Series:
    return graded["variant"] if "variant" in graded else pd.Series(ALL, index=graded.index)


def disagreements(graded: pd.DataFrame) -> pd.DataFrame:
    """One row per variant and pair of checkers: samples, how many they grade differently, and how many only
    the first (`only_first`) or only the second (`only_second`) counts as correct."""
    found = metrics.checkers_in(graded)
    if len(found) < 2:
        raise ValueError(f"Need two checkers' verdicts to compare; the samples carry {found or 'none'}.")
    rows = []
    for variant, part in graded.groupby(_groups(graded), sort=False):
        for first, second in itertools.combinations(found, 2):
            a, b = part[f"{first}_correct"].astype(bool), part[f"{second}_correct"].astype(bool)
            rows.append(
                {
                    "variant": variant,
                    "pair": f"{first} vs {second}",
                    "n_samples": len(part),
                    "differ": int((a != b).sum()),
                    "only_first": int((a & ~b).sum()),
                    "only_second": int((~a & b).sum()),
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table(disagreeing: pd.DataFrame) -> pd.DataFrame:
    """The counts to read: pairs down, variants across, "differ (only first / only second)" in each cell."""
    cells = disagreeing.assign(
        cell=[f"{d} ({a}/{b})" for d, a, b in disagreeing[["differ", "only_first", "only_second"]].to_numpy()]
    )
    wide = cells.pivot(index="pair", columns="variant", values="cell")
    return wide.reindex(
        index=list(dict.fromkeys(cells["pair"])), columns=list(dict.fromkeys(cells["variant"]))
    )


def examples(graded: pd.DataFrame, per_pair: int = 2, seed: int = 0) -> dict[str, tuple[pd.DataFrame, int]]:
    """For each pair of checkers that disagrees anywhere: up to `per_pair` of its disagreeing samples not already
    drawn for an earlier pair (seeded), and how many samples it disagrees on."""
    found = metrics.checkers_in(graded)
    picked, shown = {}, pd.Index([])
    for first, second in itertools.combinations(found, 2):
        differ = graded[graded[f"{first}_correct"].astype(bool) != graded[f"{second}_correct"].astype(bool)]
        if differ.empty:
            continue
        fresh = differ.drop(index=differ.index.intersection(shown))
        drawn = fresh.sample(min(per_pair, len(fresh)), random_state=seed)
        picked[f"{first} vs {second}"] = (drawn, len(differ))
        shown = shown.union(drawn.index)
    return picked


def _verdict(row: pd.Series, checker: str) -> str:
    mark = "right" if bool(row[f"{checker}_correct"]) else "wrong"
    if f"pred_{checker}" not in row:
        return f"{checker} {mark}"
    read = row[f"pred_{checker}"]
    return f"{checker} reads {'nothing' if read is None or read != read else read} ({mark})"


def _parts(row: pd.Series, checker_names: list[str]) -> tuple[str, str, str]:
    """(where the sample comes from and its gold, every checker's reading and verdict, the completion)."""
    where = f"{row['variant']}, " if "variant" in row else ""
    head = f"{where}problem {row['problem_id']}, sample {row['sample_idx']}, gold {row['gold']}"
    return head, "; ".join(_verdict(row, c) for c in checker_names), str(row["completion"])


def describe(row: pd.Series, checker_names: list[str]) -> str:
    """One sample in full: where it comes from, the gold, every checker's reading and verdict, the completion."""
    return "\n".join(_parts(row, checker_names))


def _heading(pair: str, drawn: pd.DataFrame, total: int) -> str:
    if drawn.empty:
        return f"{pair}: {total} sample(s) graded differently, all shown above"
    return f"{pair}: {len(drawn)} of {total} sample(s) graded differently"


def examples_text(graded: pd.DataFrame, per_pair: int = 2, seed: int = 0) -> str:
    """`examples` as plain text: a heading per pair, then each sample in full."""
    found = metrics.checkers_in(graded)
    blocks = []
    for pair, (drawn, total) in examples(graded, per_pair, seed).items():
        blocks.append(f"=== {_heading(pair, drawn, total)} ===")
        blocks += [describe(row, found) + "\n" for _, row in drawn.iterrows()]
    return "\n".join(blocks) or "The checkers agree on every sample."


def examples_markdown(graded: pd.DataFrame, per_pair: int = 2, seed: int = 0) -> str:
    """`examples` for `REPORT.md`: a heading per pair and each sample in a fenced block."""
    found = metrics.checkers_in(graded)
    parts = []
    for pair, (drawn, total) in examples(graded, per_pair, seed).items():
        parts.append(f"### {_heading(pair, drawn, total)}\n")
        for _, row in drawn.iterrows():
            head, verdicts, completion = _parts(row, found)
            fence = "~~~~" if "~~~~" not in completion else "`````"
            parts.append(f"{head}: {verdicts}\n\n{fence}text\n{completion}\n{fence}\n")
    return "\n".join(parts) or "The checkers agree on every sample."


def read_labelled(path: str | os.PathLike) -> pd.DataFrame:
    """Hand-labelled completions (`tests/fixtures/labelled_completions.jsonl`) with every reading's verdict joined
    on; the hand label is the column `label`."""
    rows = read_jsonl(path)
    graded = [{**row, **answers.grade(row["completion"], row["gold"]).__dict__} for row in rows]
    return pd.DataFrame(graded).rename(columns={"correct": "label"})


def _same_reading(read: str | None, labelled: str | None) -> bool:
    if read is None or labelled is None:
        return read is None and labelled is None
    return (answers.normalize_number(read) or read) == (answers.normalize_number(labelled) or labelled)


def confusion(labelled: pd.DataFrame, label: str = "label") -> pd.DataFrame:
    """Each checker against hand labels (column `label`, True = the committed answer is right): one row per
    checker with true and false positives and negatives, the share of samples where its verdict agrees, and
    (given the graders' `answer_read`) the share where it reads the same answer, a committed answer or none."""
    rows = []
    for checker in metrics.checkers_in(labelled):
        truth, said = labelled[label].astype(bool), labelled[f"{checker}_correct"].astype(bool)
        row = {
            "checker": checker,
            "n": len(labelled),
            "true_pos": int((truth & said).sum()),
            "false_pos": int((~truth & said).sum()),
            "false_neg": int((truth & ~said).sum()),
            "true_neg": int((~truth & ~said).sum()),
            "agreement": float((truth == said).mean()),
        }
        if "answer_read" in labelled and f"pred_{checker}" in labelled:
            pairs = zip(labelled[f"pred_{checker}"], labelled["answer_read"], strict=True)
            row["same_reading"] = float(np.mean([_same_reading(p, a) for p, a in pairs]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("checker")
