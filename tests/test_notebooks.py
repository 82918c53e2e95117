"""Structure lint of the notebooks (milliseconds): `pytest tests/test_notebooks.py`."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import REPO_URL, pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sync_notebooks  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def python_of(cell: nbformat.NotebookNode) -> str:
    """The cell's source without IPython cell magics, so `ast` can parse it."""
    return "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))


def test_every_notebook_is_a_pipeline_step() -> None:
    names = {s.name for s in pipeline.STEPS}
    assert NOTEBOOKS and {p.stem for p in NOTEBOOKS} <= names
    assert [p.stem for p in NOTEBOOKS] == [s.name for s in pipeline.STEPS if s.notebook.exists()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
class TestNotebook:
    def test_opens_with_an_h1_title_and_the_colab_badge(self, path: Path) -> None:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# ")
        assert sync_notebooks.badge(path) in first.source
        assert REPO_URL.removeprefix("https://github.com/") in sync_notebooks.colab_url(path)

    def test_first_code_cell_is_the_colab_setup_then_a_parameters_cell(self, path: Path) -> None:
        cells = code_cells(nbformat.read(path, as_version=4))
        assert cells[0].source == sync_notebooks.setup_cell()
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1
        names = {t.id for node in ast.walk(ast.parse(tagged[0].source)) for t in getattr(node, "targets", [])}
        assert {"run_dir", "profile", "overrides"} <= names

    def test_no_function_class_or_lambda_is_defined(self, path: Path) -> None:
        for cell in code_cells(nbformat.read(path, as_version=4)):
            for node in ast.walk(ast.parse(python_of(cell))):
                assert not isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
                ), f"{path.name}: logic belongs in helpers/, not in a notebook cell:\n{cell.source}"

    def test_committed_without_outputs(self, path: Path) -> None:
        for cell in code_cells(nbformat.read(path, as_version=4)):
            assert cell.outputs == [] and cell.execution_count is None
        assert "widgets" not in nbformat.read(path, as_version=4).metadata

    def test_is_in_sync_with_the_shared_cells(self, path: Path, tmp_path: Path) -> None:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        assert not sync_notebooks.sync(copy), f"run: .venv/bin/python scripts/sync_notebooks.py ({path.name})"

    def test_ends_with_a_markdown_takeaway_and_a_cell_printing_what_it_wrote(self, path: Path) -> None:
        cells = nbformat.read(path, as_version=4).cells
        assert cells[-2].cell_type == "markdown" and "Takeaway" in cells[-2].source
        assert cells[-1].cell_type == "code" and "print(" in cells[-1].source
