"""On CUDA, Unsloth is imported before trl, transformers and peft by every entry point: Unsloth patches TRL by
rebinding names inside `trl` (unsloth 2026.10.9, unsloth/models/rl.py, about lines 3945-3975), so a class imported
earlier stays unpatched.

Each entry point (the imports of every notebook, every helpers module, the scripts) runs in a subprocess on a
stand-in GPU machine (tests/fixtures/fake_gpu: CUDA reported available, a stand-in `unsloth` package), which
records whether Unsloth was imported when trl, transformers or peft was first asked for.
Run: `.venv/bin/python -m pytest tests/test_import_order.py`
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_GPU = Path(__file__).parent / "fixtures" / "fake_gpu"
pytestmark = pytest.mark.slow  # about 30 subprocesses, each importing torch: under a minute on 2 cores


def import_lines(source: str) -> list[str]:
    """The import statements of a Python source, in order (magics and cells that are not Python skipped)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def notebook_imports(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    return "\n".join(line for c in cells if c.cell_type == "code" for line in import_lines(c.source))


ENTRY_MODULES = ("pipeline", "training", "sampling", "evaluation", "models", "colab")
ENTRY_POINTS = {
    **{f"notebook {p.stem}": notebook_imports(p) for p in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))},
    # Every helpers module runs helpers/__init__ first; these are the ones a user starts from.
    **{f"helpers.{name}": f"import helpers.{name}" for name in ENTRY_MODULES},
    **{
        f"scripts/{p.name}": "\n".join(import_lines(p.read_text()))
        for p in sorted((ROOT / "scripts").glob("*.py"))
    },
}


def standin_env(record: Path, cuda: bool = True) -> dict[str, str]:
    """The environment of a process on the stand-in machine (CUDA faked or not)."""
    # scripts/ as well: a script run as `python scripts/x.py` imports its neighbours (checklist) from there
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKE_GPU), str(ROOT), str(ROOT / "scripts")])}
    return env | {"GSM8K_IMPORT_RECORD": str(record), "GSM8K_FAKE_CUDA": "1" if cuda else "0"}


def first_import(code: str, tmp: Path) -> dict | None:
    """Run `code` on the stand-in GPU machine; the record of the first watched import, or None if none came."""
    record = tmp / f"record-{abs(hash(code))}.json"
    env = standin_env(record)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode:
        raise AssertionError(f"`{code}` failed on the stand-in GPU machine:\n{result.stderr[-3000:]}")
    return json.loads(record.read_text()) if record.exists() else None


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict | None]:
    tmp = tmp_path_factory.mktemp("imports")
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run is mostly torch's import: two at a time
        found = pool.map(lambda code: first_import(code, tmp), ENTRY_POINTS.values())
        return dict(zip(ENTRY_POINTS, found, strict=True))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_unsloth_comes_before_trl_transformers_and_peft(records: dict, entry: str) -> None:
    record = records[entry]
    if record is None:
        return  # this entry point imports none of them, so there is no order to get wrong
    assert record["unsloth_before"], (
        f"{entry}: {record['first']} was imported before Unsloth on a CUDA machine, so Unsloth cannot patch "
        "its trainers. Import helpers (which imports Unsloth first) before it."
    )


def test_the_training_entry_points_do_reach_trl(records: dict) -> None:
    """The check above is not vacuous: the notebooks that train do import the watched libraries."""
    for entry in ("notebook 03_sft", "notebook 06_grpo", "helpers.training", "scripts/gpu_smoke.py"):
        assert records[entry] is not None, f"{entry} imported none of trl, transformers, peft"


def test_the_recorder_catches_a_wrong_order(tmp_path: Path) -> None:
    """trl imported before helpers is caught by the recorder, and helpers itself refuses to go on."""
    assert first_import("import trl\nimport helpers", tmp_path) == {"first": "trl", "unsloth_before": False}
    code = "import sys\nsys.modules['peft'] = object()\ntry:\n    import helpers\nexcept ImportError as e:\n"
    code += "    print(e)\n    raise SystemExit(0)\nraise SystemExit('helpers imported after peft')"
    env = standin_env(tmp_path / "unused.json")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "peft was imported before Unsloth" in result.stdout and "Restart the kernel" in result.stdout


def test_without_cuda_unsloth_is_not_imported(tmp_path: Path) -> None:
    """Unsloth installed but no CUDA: importing helpers does not import it (its CPU mode is not ours)."""
    code = "import sys, helpers.training; print('unsloth' in sys.modules)"
    env = standin_env(tmp_path / "record.json", cuda=False)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert json.loads((tmp_path / "record.json").read_text()) == {
        "first": "transformers",
        "unsloth_before": False,
    }
    assert out.returncode == 0, out.stderr[-2000:]


def test_without_unsloth_helpers_imports_nothing_heavy() -> None:
    """The CPU set (no Unsloth): importing the light modules imports neither Unsloth nor torch."""
    code = "import sys, helpers.answers; print('unsloth' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
