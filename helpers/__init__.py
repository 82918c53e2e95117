"""Helpers for the GSM8K notebook series: every piece of logic the notebooks call, each module one concern."""

# Where the series is published: the notebooks' Colab badges and set-up cells use this URL (a test keeps them
# in sync with it). A fork changes this line and reruns `python scripts/sync_notebooks.py`.
REPO_URL = "https://github.com/gsm8k-rl/notebooks"
