"""Figures render inline without pyplot: `pytest tests/unit/test_plots.py`."""

from __future__ import annotations

import pandas as pd

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
            "metric": ["maj@4"] * 4,
            "diff": [0.1, 0.0, 0.2, -0.1],
            "lo": [0.0, -0.1, 0.1, -0.2],
            "hi": [0.2, 0.1, 0.3, 0.0],
        }
    )
    fig = plots.cost_vs_gain(cost, paired, "maj@4")
    assert [ax.get_title() for ax in fig.axes] == ["strict checker", "lenient checker"]
    assert fig._repr_png_().startswith(PNG)
