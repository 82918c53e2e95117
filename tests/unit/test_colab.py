"""The Colab set-up without Colab: the install chosen from the driver, outputs linked to Drive, the restart.

Run: `.venv/bin/python -m pytest tests/unit/test_colab.py`
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import colab


@pytest.mark.parametrize(
    ("driver", "first"),
    [
        ("580.82.07", "pip install vllm==0.32.0"),  # CUDA 13 driver: the PyPI wheels
        ("590.48.01", "pip install vllm==0.32.0"),
        ("550.54.15", "pip install torch==2.13.0+cu128"),  # an older Colab driver: the CUDA 12.8 build
        ("525.60.13", "pip install torch==2.13.0+cu128"),
    ],
)
def test_the_install_follows_the_driver(driver: str, first: str) -> None:
    commands = colab.install_commands(driver)
    assert commands[0].startswith(first) and commands[-1] == "pip install --no-deps -e ."
    assert "pip install -r requirements-gpu.txt" in commands  # run from the repository root


@pytest.mark.parametrize(
    ("versions", "installed"),
    [
        ({"unsloth": "2026.10.9", "vllm": "0.32.0", "transformers": "5.17.0", "trl": "1.14.2"}, True),
        ({"unsloth": "2026.10.9", "vllm": "0.32.0+cu128", "transformers": "5.17.0", "trl": "1.14.2"}, True),
        ({"unsloth": "2026.10.9", "vllm": "0.15.1", "transformers": "5.17.0", "trl": "1.14.2"}, False),
        ({"vllm": "0.32.0", "transformers": "5.17.0", "trl": "1.14.2"}, False),  # no Unsloth
    ],
)
def test_the_installed_stack_is_recognized(monkeypatch, versions: dict, installed: bool) -> None:
    """After the restart the CUDA 12.8 build (vllm 0.32.0+cu128) counts as installed: no second install."""

    def version(name: str) -> str:
        if name not in versions:
            raise colab.importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(colab.importlib.metadata, "version", version)
    assert colab.stack_installed() is installed


@pytest.mark.parametrize(
    ("driver", "expected"), [(None, "No GPU in this runtime"), ("470.82.01", "driver 470.82.01 is too old")]
)
def test_no_usable_driver_stops_before_installing(driver, expected: str) -> None:
    with pytest.raises(colab.StopHere, match=expected):
        colab.install_commands(driver)


def test_pins_are_read_from_the_gpu_requirements() -> None:
    assert colab.pinned("vllm") == "0.32.0" and colab.pinned("unsloth") == "2026.10.9"
    assert colab.pinned("no-such-package") is None


def test_outputs_become_a_link_to_drive_and_keep_their_runs(tmp_path: Path) -> None:
    repo, drive = tmp_path / "series", tmp_path / "drive"
    (repo / "outputs").mkdir(parents=True)
    (repo / "outputs" / "README.md").write_text("the folder's readme")
    target = colab.link_outputs(str(drive), repo=repo)
    assert (repo / "outputs").is_symlink() and (repo / "outputs").resolve() == target.resolve()
    (repo / "outputs" / "smoke").mkdir()  # a run written through the link lands on "Drive"
    assert (drive / "outputs" / "smoke").is_dir()
    assert (repo / "outputs.repo" / "README.md").read_text() == "the folder's readme"
    assert colab.link_outputs(str(drive), repo=repo) == target  # a second run of the cell is harmless


def test_set_up_does_nothing_outside_colab(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(colab, "link_outputs", None)  # would crash if called
    assert colab.set_up("/content/drive/MyDrive/x") is None


def test_a_fresh_install_asks_for_a_restart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    monkeypatch.setattr(colab, "link_outputs", lambda drive_dir: tmp_path)
    monkeypatch.setattr(colab, "stack_installed", lambda: False)
    monkeypatch.setattr(colab.accelerator, "driver_version", lambda: "580.82.07")
    ran = []
    monkeypatch.setattr(
        colab.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or type("R", (), {"returncode": 0})()
    )
    with pytest.raises(colab.StopHere, match="Restart session"):
        colab.set_up("/content/drive/MyDrive/x")
    assert [c[1:4] for c in ran][0] == ["-m", "pip", "install"] and len(ran) == 3


def test_the_gpu_page_gives_the_installs_the_code_runs() -> None:
    """docs/gpu.md lists, line for line, the commands helpers.accelerator names and Colab runs."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "gpu.md").read_text().splitlines()
    for command in (*colab.accelerator.PYPI_INSTALL, *colab.accelerator.CUDA12_INSTALL):
        assert command in page, f"docs/gpu.md lacks the install line {command!r}"
