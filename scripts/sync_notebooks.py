"""Rewrite the cells every notebook shares (Colab badge, the link to its executed copy in the published CPU
study, Colab set-up) from `helpers.REPO_URL`, and strip outputs, execution counts and widget state.

Run after changing `helpers.REPO_URL` or editing a notebook in Jupyter: `.venv/bin/python scripts/sync_notebooks.py`.
tests/test_notebooks.py fails when a notebook is out of sync.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from helpers import REPO_URL

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BADGE_PREFIX = "[![Open In Colab]"
SETUP_MARKER = "# Colab set-up:"
EXECUTED_PREFIX = "**Executed copy:**"
PUBLISHED_NOTEBOOKS = "../outputs/published/cpu-study/notebooks"  # `helpers.study` publishes them there


def colab_url(notebook: Path) -> str:
    """The notebook's "Open in Colab" address on the published repository."""
    return f"https://colab.research.google.com/github/{REPO_URL.removeprefix('https://github.com/')}/blob/main/notebooks/{notebook.name}"


def badge(notebook: Path) -> str:
    return f"{BADGE_PREFIX}(https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def executed_link(notebook: Path) -> str:
    """The header line linking the notebook's executed copy from the published CPU study."""
    return (
        f"{EXECUTED_PREFIX} [this notebook as the CPU study ran it]({PUBLISHED_NOTEBOOKS}/{notebook.name}), every "
        "output included: read a whole run without running anything."
    )


def setup_cell() -> str:
    """The first code cell: on Colab, clone, link outputs/ to Drive and install (`helpers.colab`); elsewhere
    (or under papermill) nothing. Not captured: its driver check and restart request must be seen."""
    return f"""{SETUP_MARKER} clone the series, keep runs on Drive, install the GPU stack. Does nothing outside Colab.
import os
import subprocess
import sys

REPO_URL = "{REPO_URL}"
# Run directories (outputs/) live in this Drive folder, so they outlive the runtime of each notebook.
drive_dir = "/content/drive/MyDrive/gsm8k-rl"  # @param {{type:"string"}}
if "COLAB_" in "".join(os.environ):
    if not os.path.isdir("/content/series"):
        subprocess.run(["git", "clone", "--depth=1", REPO_URL, "/content/series"], check=True)
    sys.path.insert(0, "/content/series")
    os.chdir("/content/series/notebooks")
    from helpers import colab

    colab.set_up(drive_dir)  # on a fresh runtime: installs, then asks for Runtime > Restart session"""


def sync(path: Path) -> bool:
    """Bring one notebook's shared cells and metadata in line; True when the file changed."""
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    title = nb.cells[0].source.splitlines()
    rest = [line for line in title if not line.startswith((BADGE_PREFIX, EXECUTED_PREFIX))]
    header = [rest[0], "", badge(path), "", executed_link(path), *rest[1:]]
    nb.cells[0].source = "\n".join(header).replace("\n\n\n", "\n\n")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and code[0].source.removeprefix("%%capture\n").startswith(SETUP_MARKER):
        code[0].source = setup_cell()
    else:
        nb.cells.insert(1, nbformat.v4.new_code_cell(setup_cell()))
    for cell in nb.cells:
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    nb.nbformat, nb.nbformat_minor = 4, 4
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


if __name__ == "__main__":
    for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        print(f"{notebook.name}: {'updated' if sync(notebook) else 'in sync'}")
