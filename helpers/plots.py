"""Figures for the notebooks: each function takes data frames and returns a matplotlib `Figure`.

Figures are built without pyplot, so nothing is drawn twice inline; the notebook shows the returned figure
(an `InlineFigure`, which renders itself as PNG in Jupyter and papermill without any backend set-up) and
`save` writes it as PNG under `figures/`. The numbers come from `metrics` and `filtering`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from helpers import metrics, plateau
from helpers.files import atomic_write_bytes


class InlineFigure(Figure):
    """A matplotlib figure that Jupyter displays as a PNG (no pyplot, no `%matplotlib inline` needed)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


FINISH_COLORS = {"answer": "tab:green", "stop": "tab:blue", "length": "tab:red"}
CHECKER_COLORS = {
    "strict": "tab:purple",
    "lenient": "tab:orange",
    "lmeval_strict": "tab:pink",
    "lmeval_flexible": "tab:olive",
    "judge": "tab:cyan",
}


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG (parents created) and return its path."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight")
    # Atomically: a kill mid-save leaves the old figure, never half a new one
    return atomic_write_bytes(path, png.getvalue())


def completion_lengths(samples: pd.DataFrame, title: str = "Completion lengths") -> Figure:
    """Histogram of generated tokens per completion, stacked by why each completion ended."""
    if samples.empty:
        raise ValueError("completion_lengths: no samples to plot.")
    fig = InlineFigure(figsize=(7, 3.5))
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
    fig = InlineFigure(figsize=(7, 3.5))
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
    fig = InlineFigure(figsize=(7, 3.5))
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
    """One panel per logged metric against the optimizer step (a trainer's `log_history` as a frame).

    A run too short to log any of them gets one empty panel that says so, not an error.
    """
    present = [m for m in metrics if m in history and history[m].notna().any()]
    fig = InlineFigure(figsize=(3.2 * max(len(present), 1), 3))
    if not present:
        ax = fig.subplots()
        ax.text(0.5, 0.5, f"none of {list(metrics)} was logged", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    for ax, metric in zip(
        fig.subplots(1, len(present), squeeze=False)[0] if present else [], present, strict=True
    ):
        logged = history.dropna(subset=[metric])
        ax.plot(logged["step"], logged[metric], marker="o", markersize=3)
        ax.set(xlabel="optimizer step", title=metric)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def solve_rate_rounds(rounds: dict[str, pd.DataFrame], checker: str, title: str) -> Figure:
    """Per-problem correct counts of several graded sample sets side by side (e.g. round 1 vs round 2)."""
    fig = InlineFigure(figsize=(7, 3.5))
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


def pass_at_k_curves(results: pd.DataFrame, title: str = "pass@k on the test set") -> Figure:
    """pass@k for k = 1..n, one line per variant, one panel per checker (a `metrics.summarize` table)."""
    checkers = list(dict.fromkeys(results["checker"]))
    ks = sorted(int(c.split("@")[1]) for c in results.columns if c.startswith("pass@") and c[5:].isdigit())
    fig = InlineFigure(figsize=(4.5 * len(checkers), 3.5))
    axes = fig.subplots(1, len(checkers), sharey=True, squeeze=False)[0]
    for ax, checker in zip(axes, checkers, strict=True):
        for _, row in results[results["checker"] == checker].iterrows():
            ax.plot(ks, [row[f"pass@{k}"] for k in ks], marker="o", label=row["variant"])
        ax.set(xlabel="k", xticks=ks, title=f"{checker} checker")
    axes[0].set_ylabel("pass@k")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def large_k_curves(curves: pd.DataFrame, checker: str) -> Figure:
    """pass@k to large k on a log-k axis for one checker (a `large_k.curves` table): the base in black with its 95 %
    band, every variant on the same figure with its 95 % interval as error bars, each nudged sideways a little so
    that curves which coincide stay visible. Where the black line passes a variant's is the crossover."""
    part = curves[curves["checker"] == checker]
    if part.empty:
        raise ValueError(f"large_k_curves: no {checker} rows in the curves table.")
    ks = sorted(part["k"].unique())
    fig = InlineFigure(figsize=(8, 4.4))
    ax = fig.subplots()
    variants = list(dict.fromkeys(part["variant"]))
    others = [v for v in variants if v != "base"]
    for variant in variants:
        rows = part[part["variant"] == variant]
        if variant == "base":
            ax.fill_between(rows["k"], rows["lo"], rows["hi"], color="black", alpha=0.12, label="base 95 %")
            ax.plot(
                rows["k"], rows["pass@k"], color="black", linewidth=2.5, marker="o", label="base", zorder=3
            )
            continue
        nudge = 2 ** (0.12 * (others.index(variant) - (len(others) - 1) / 2) / max(len(others), 1))
        errors = [rows["pass@k"] - rows["lo"], rows["hi"] - rows["pass@k"]]
        ax.errorbar(
            rows["k"] * nudge, rows["pass@k"], yerr=errors, marker="o", markersize=3, capsize=2, linewidth=1.2,
            elinewidth=0.7, alpha=0.85, label=variant,
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="k (log scale)", ylabel="pass@k", ylim=(0, 1.02))
    ax.set_title(f"pass@k to k={ks[-1]}, {checker} checker (95 % intervals over problems)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def metric_bars(
    results: pd.DataFrame,
    k: int,
    title: str = "pass@1, pass@k and both maj@k (maj_half: right in over half; maj_vote: majority answer right)",
) -> Figure:
    """One panel per metric (pass@1, pass@k, maj_half@k and maj_vote@k side by side): a bar per variant and
    checker, with its bootstrap interval where the table has one (a checker without a metric, such as the judge
    without maj_vote@k, has no bar there)."""
    names = ["pass@1", f"pass@{k}", metrics.MAJ_HALF.format(k=k), metrics.MAJ_VOTE.format(k=k)]
    variants = list(dict.fromkeys(results["variant"]))
    checkers = list(dict.fromkeys(results["checker"]))
    fig = InlineFigure(figsize=(4.5 * len(names), 3.8))
    width = 0.8 / len(checkers)
    x = np.arange(len(variants))
    for ax, metric in zip(fig.subplots(1, len(names), sharey=True), names, strict=True):
        for i, checker in enumerate(checkers):
            part = results[results["checker"] == checker].set_index("variant").loc[variants]
            errors = None
            if f"{metric}_lo" in part:
                errors = [part[metric] - part[f"{metric}_lo"], part[f"{metric}_hi"] - part[metric]]
            ax.bar(
                x + (i - (len(checkers) - 1) / 2) * width,
                part[metric],
                width,
                yerr=errors,
                capsize=2,
                color=CHECKER_COLORS.get(checker),
                label=checker,
            )
        ax.set(xticks=x, title=metric)
        ax.set_xticklabels(variants, rotation=45, ha="right", fontsize=8)
    fig.axes[0].legend(title="checker", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


BREAKDOWN_COLORS = ("tab:green", "tab:olive", "tab:orange", "tab:gray")


def format_breakdown(breakdown: pd.DataFrame, title: str = "Right vs formatted, per variant") -> Figure:
    """Stacked bars of each variant's samples: right/wrong (lenient) x formatted/unformatted (`####` line)."""
    fig = InlineFigure(figsize=(7, 0.5 * len(breakdown) + 1.5))
    ax = fig.subplots()
    left = np.zeros(len(breakdown))
    for column, color in zip(breakdown.columns, BREAKDOWN_COLORS, strict=True):
        ax.barh(breakdown.index, breakdown[column], left=left, color=color, label=column)
        left += breakdown[column].to_numpy()
    ax.invert_yaxis()
    ax.set(xlabel="share of samples", xlim=(0, 1), title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    return fig


def cost_vs_gain(
    cost: pd.DataFrame, paired: pd.DataFrame, metric: str | list[str], title: str = "Cost vs gain"
) -> Figure:
    """Each variant's total tokens (sampled + trained + teacher, lineage included) against its change vs the base
    in `metric`, one panel per checker; several metrics (both maj@k: `[f"maj_half@{k}", f"maj_vote@{k}"]`) make one
    row of panels each, side by side in the same columns."""
    names = [metric] if isinstance(metric, str) else list(metric)
    missing = [m for m in names if m not in set(paired["metric"])]
    if missing:
        raise ValueError(
            f"cost_vs_gain: no {missing} in the paired table; it has {sorted(set(paired['metric']))}."
        )
    checkers = list(dict.fromkeys(paired["checker"]))
    fig = InlineFigure(figsize=(5 * len(checkers), 4 * len(names)))
    grid = fig.subplots(len(names), len(checkers), sharey="row", squeeze=False)
    for row, name in zip(grid, names, strict=True):
        _cost_vs_gain_row(row, cost, paired, name, checkers)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _cost_vs_gain_row(
    axes: np.ndarray, cost: pd.DataFrame, paired: pd.DataFrame, metric: str, checkers: list[str]
) -> None:
    for ax, checker in zip(axes, checkers, strict=True):
        part = paired[(paired["checker"] == checker) & (paired["metric"] == metric)].set_index("variant")
        if part.empty:  # the judge has no maj_vote@k
            ax.set_axis_off()
            continue
        part = part.loc[[v for v in part.index if v in cost.index]]
        tokens = cost.loc[part.index, "total_tokens"].astype(float)
        errors = [part["diff"] - part["lo"], part["hi"] - part["diff"]]
        ax.errorbar(tokens, part["diff"], yerr=errors, fmt="o", capsize=3, color=CHECKER_COLORS.get(checker))
        for i, (name, x, y) in enumerate(zip(part.index, tokens, part["diff"], strict=True)):
            # staggered labels: variants of one lineage often cost the same tokens
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4 + 9 * (i % 3)), fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(xscale="log", xlabel="tokens sampled + trained + teacher (log)", title=f"{checker} checker")
    axes[0].set_ylabel(f"{metric} minus base (95 % interval)")


GRPO_PANELS = {"correctness_reward": "correctness", "format_reward": "format", "reward": "total (the rule's)"}


def grpo_windows(
    arms: dict[str, pd.DataFrame], window: int, title: str = "GRPO's rewards per window"
) -> Figure:
    """One panel per reward (correctness, format, and the total the plateau rule reads), one line per arm: the
    mean over each window of `window` prompts against the prompts consumed, with a band of 2 standard errors
    (`plateau.windows`); `arms`: each arm's groups (`plateau.GroupRewards.frame`). Windows of one prompt have no
    spread to draw: their band is left out."""
    fig = InlineFigure(figsize=(3.6 * len(GRPO_PANELS), 3.2))
    for ax, (column, label) in zip(
        fig.subplots(1, len(GRPO_PANELS), squeeze=False)[0], GRPO_PANELS.items(), strict=True
    ):
        for name, groups in arms.items():
            found = plateau.windows(groups, window, column) if column in groups else pd.DataFrame()
            if found.empty:
                continue
            line = ax.plot(found["end"], found["reward"], marker="o", markersize=3, label=name)[0]
            if window > 1:
                low, high = (
                    found["reward"] - plateau.Z * found["se"],
                    found["reward"] + plateau.Z * found["se"],
                )
                ax.fill_between(found["end"], low, high, color=line.get_color(), alpha=0.15)
        ax.set(xlabel="prompts consumed", title=f"{label}, mean per {window} prompts")
    axes = fig.axes
    if any(ax.lines for ax in axes):
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
