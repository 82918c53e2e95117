"""Figures for the notebooks: each function takes data frames and returns a matplotlib `Figure`.

Figures are built without pyplot, so nothing is drawn twice inline; the notebook shows the returned figure
and `save` writes it as PNG under `figures/`. The numbers come from `metrics` and `filtering`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from helpers import metrics

FINISH_COLORS = {"answer": "tab:green", "stop": "tab:blue", "length": "tab:red"}
CHECKER_COLORS = {"strict": "tab:purple", "lenient": "tab:orange"}


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (parents created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def completion_lengths(samples: pd.DataFrame, title: str = "Completion lengths") -> Figure:
    """Histogram of generated tokens per completion, stacked by why each completion ended."""
    if samples.empty:
        raise ValueError("completion_lengths: no samples to plot.")
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    reasons = [r for r in FINISH_COLORS if r in set(samples["finish_reason"])]
    bins = np.linspace(0, max(int(samples["n_tokens"].max()), 1), 25)
    ax.hist(
        [samples.loc[samples["finish_reason"] == r, "n_tokens"] for r in reasons],
        bins=bins,
        stacked=True,
        color=[FINISH_COLORS[r] for r in reasons],
        label=[f"{r} ({int((samples['finish_reason'] == r).sum())})" for r in reasons],
    )
    ax.set(xlabel="generated tokens", ylabel="completions", title=title)
    ax.legend(title="ended by")
    return fig


def solve_rates(graded: pd.DataFrame, title: str = "Per-problem solve rate") -> Figure:
    """How many of its k samples each problem got right, under both checkers side by side."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    k = int(graded.groupby("problem_id").size().max())
    width = 0.4
    for offset, checker in ((-width / 2, "strict"), (width / 2, "lenient")):
        counts = metrics.per_problem(graded, checker)["c"].value_counts().reindex(range(k + 1), fill_value=0)
        ax.bar(counts.index + offset, counts.values, width, color=CHECKER_COLORS[checker], label=checker)
    ax.set(xlabel=f"correct samples out of {k}", ylabel="problems", title=title, xticks=range(k + 1))
    ax.legend(title="checker")
    return fig


def checker_counts(stats: pd.DataFrame, title: str = "Strict vs lenient") -> Figure:
    """Grouped bars of a `filtering.filter_stats` table: what each checker counts as correct."""
    columns = ["correct_samples", "problems_with_a_correct", "with_####_line"]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    x = np.arange(len(columns))
    for i, checker in enumerate(stats.index):
        values = [stats.loc[checker, c] for c in columns]
        bars = ax.bar(x + (i - 0.5) * 0.4, values, 0.4, color=CHECKER_COLORS.get(checker), label=checker)
        ax.bar_label(bars)
    ax.margins(y=0.15)  # room for the bar labels under the title
    ax.set(xticks=x, xticklabels=[c.replace("_", " ") for c in columns], ylabel="count", title=title)
    ax.legend(title="checker")
    return fig


def training_curves(history: pd.DataFrame, metrics: tuple[str, ...] | list[str], title: str) -> Figure:
    """One panel per logged metric against the optimizer step (a trainer's `log_history` as a frame)."""
    present = [m for m in metrics if m in history and history[m].notna().any()]
    if not present:
        raise ValueError(f"training_curves({title!r}): none of {list(metrics)} was logged.")
    fig = Figure(figsize=(3.2 * len(present), 3))
    for ax, metric in zip(fig.subplots(1, len(present), squeeze=False)[0], present, strict=True):
        logged = history.dropna(subset=[metric])
        ax.plot(logged["step"], logged[metric], marker="o", markersize=3)
        ax.set(xlabel="optimizer step", title=metric)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def solve_rate_rounds(rounds: dict[str, pd.DataFrame], checker: str, title: str) -> Figure:
    """Per-problem correct counts of several graded sample sets side by side (e.g. round 1 vs round 2)."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    k = max(int(g.groupby("problem_id").size().max()) for g in rounds.values())
    width = 0.8 / len(rounds)
    for i, (label, graded) in enumerate(rounds.items()):
        solved = metrics.per_problem(graded, checker)["c"]
        counts = solved.value_counts().reindex(range(k + 1), fill_value=0)
        offset = (i - (len(rounds) - 1) / 2) * width
        ax.bar(counts.index + offset, counts.values, width, label=f"{label} (mean {solved.mean():.2f})")
    ax.set(
        xlabel=f"{checker}-correct samples out of {k}", ylabel="problems", title=title, xticks=range(k + 1)
    )
    ax.legend()
    return fig
