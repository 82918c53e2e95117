"""Properties of pass@k (hypothesis): `pytest tests/property`."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from helpers import metrics


@st.composite
def n_c_k(draw: st.DrawFn, max_n: int = 10) -> tuple[int, int, int]:
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@given(n_c_k())
def test_pass_at_k_equals_brute_force_over_all_k_subsets(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(samples, k))
    brute = sum(any(s) for s in subsets) / len(subsets)
    assert np.isclose(metrics.pass_at_k(n, c, k), brute)


@given(n_c_k(max_n=64))
def test_pass_at_k_stays_in_unit_interval(nck: tuple[int, int, int]) -> None:
    assert 0.0 <= metrics.pass_at_k(*nck) <= 1.0


@given(n_c_k(max_n=64))
def test_pass_at_k_never_decreases_with_k(nck: tuple[int, int, int]) -> None:
    n, c, _ = nck
    values = [metrics.pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:], strict=False))


@given(n_c_k(max_n=64))
def test_pass_at_1_is_fraction_and_pass_at_n_is_any(nck: tuple[int, int, int]) -> None:
    n, c, _ = nck
    assert np.isclose(metrics.pass_at_k(n, c, 1), c / n)
    assert metrics.pass_at_k(n, c, n) == float(c > 0)
