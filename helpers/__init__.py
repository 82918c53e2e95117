"""Helpers for the GSM8K notebook series: every piece of logic the notebooks call, each module one concern.

Importing `helpers` (any module of it) on a CUDA machine with Unsloth installed imports Unsloth first, before
trl, transformers or peft: the order is a property of the package, not of each notebook (`accelerator`).
"""

from helpers import accelerator

# Where the series is published: the notebooks' Colab badges and set-up cells use this URL (a test keeps them
# in sync with it). A fork changes this line and reruns `python scripts/sync_notebooks.py`.
REPO_URL = "https://github.com/gsm8k-rl/notebooks"

accelerator.import_unsloth_first()
