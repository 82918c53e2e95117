"""Figures render inline without pyplot: `pytest tests/unit/test_plots.py`."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_render_themselves_as_png_for_jupyter() -> None:
    fig = plots.training_curves(pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}), ["loss"], "SFT_1")
    assert isinstance(fig, plots.InlineFigure)
    assert fig._repr_png_().startswith(PNG)


def test_cost_vs_gain_draws_one_panel_per_checker() -> None:
    cost = pd.DataFrame({"total_tokens": [100, 300]}, index=["SFT_1", "GRPO"])
    paired = pd.DataFrame(
        {
            "variant": ["SFT_1", "GRPO"] * 2,
            "checker": ["strict", "strict", "lenient", "lenient"],
            "metric": ["maj_half@4"] * 4,
            "diff": [0.1, 0.0, 0.2, -0.1],
            "lo": [0.0, -0.1, 0.1, -0.2],
            "hi": [0.2, 0.1, 0.3, 0.0],
        }
    )
    fig = plots.cost_vs_gain(cost, paired, "maj_half@4")
    assert [ax.get_title() for ax in fig.axes] == ["strict checker", "lenient checker"]
    assert fig._repr_png_().startswith(PNG)
    both = pd.concat([paired, paired.assign(metric="maj_vote@4")])
    fig = plots.cost_vs_gain(cost, both, ["maj_half@4", "maj_vote@4"])  # both maj@k, one row each
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == [
        "maj_half@4 minus base (95 % interval)",
        "maj_vote@4 minus base (95 % interval)",
    ]
    with pytest.raises(ValueError, match="no \\['maj@4'\\] in the paired table"):
        plots.cost_vs_gain(cost, both, "maj@4")


def test_metric_bars_show_both_maj_at_k_side_by_side() -> None:
    rows = []
    for variant in ("base", "SFT_1"):
        for checker in ("strict", "judge"):
            row = {"variant": variant, "checker": checker, "pass@1": 0.2, "pass@4": 0.6, "maj_half@4": 0.1}
            row |= {
                f"{m}_{end}": v
                for m in ("pass@1", "pass@4", "maj_half@4")
                for end, v in (("lo", 0.0), ("hi", 0.7))
            }
            if checker != "judge":  # the judge has no answers to vote on
                row |= {"maj_vote@4": 0.3, "maj_vote@4_lo": 0.2, "maj_vote@4_hi": 0.4}
            rows.append(row)
    fig = plots.metric_bars(pd.DataFrame(rows), 4)
    assert [ax.get_title() for ax in fig.axes] == ["pass@1", "pass@4", "maj_half@4", "maj_vote@4"]
    assert fig._repr_png_().startswith(PNG)
