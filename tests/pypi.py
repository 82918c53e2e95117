"""Whether PyPI answers: a test that needs it skips, saying what it could not do, where it does not."""

from __future__ import annotations

import urllib.request

import pytest

PYPI = "https://pypi.org/simple/"


def require_pypi(without_it: str) -> None:
    """Skip the calling test when PyPI cannot be reached; `without_it`: what then cannot be done."""
    try:
        urllib.request.urlopen(PYPI + "pip/", timeout=15).close()
    except OSError as err:
        pytest.skip(f"PyPI ({PYPI}) cannot be reached, so {without_it}: {err}")
