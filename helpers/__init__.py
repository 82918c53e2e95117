"""Helpers for the GSM8K notebook series: every piece of logic the notebooks call, each module one concern."""
