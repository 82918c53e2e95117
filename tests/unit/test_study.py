"""The CPU study's publication: the README says what the published files say, and `publish` writes them whole."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config, evaluation, files, large_k, metrics, pipeline, plateau, report, study

PNG = b"\x89PNG\r\n\x1a\n"


# The README against the files published beside it (outputs/published/cpu-study/).


def _section_rows(header_start: str, page: Path = study.README) -> tuple[list[str], list[list[str]]]:
    """The header cells and the rows of the table whose header starts with `header_start` in `page`'s study
    section (escaped pipes in a cell read back as pipes)."""
    assert (study.PUBLISHED / study.RECORD).is_file(), (
        "No published study: run `make study`, then `python -m helpers.study publish outputs/cpu-study`."
    )
    lines = study.readme_section(page).splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(f"| {header_start}")), None)
    assert at is not None, f"the README's study section has no table headed {header_start!r}"

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]

    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return cells(lines[at]), rows


def _close(shown: str, value: float) -> bool:
    """`shown` is `value` rounded to the decimals it shows."""
    places = len(shown.partition(".")[2])
    return abs(float(shown) - value) <= 0.5 * 10**-places + 1e-12


def test_the_readme_numbers_equal_the_published_results_csv() -> None:
    header, rows = _section_rows("variant", study.FINDINGS)
    results = pd.read_csv(study.PUBLISHED / "eval" / "results.csv").set_index(["variant", "checker"])
    assert {r[0] for r in rows} == set(results.index.get_level_values("variant"))
    k = json.loads((study.PUBLISHED / "config.json").read_text())["k"]
    assert header[1:-1] == [
        f"{m} {c}" for c in study.CHECKERS for m in ("pass@1", f"pass@{k}", f"maj_half@{k}", f"maj_vote@{k}")
    ]
    number = r"(-?\d+(?:\.\d+)?)"
    checked = 0
    for row in rows:
        for column, cell in zip(header[1:], row[1:], strict=True):
            metric, _, checker = column.rpartition(" ")
            source = results.loc[(row[0], "lenient" if column == "format rate" else checker)]
            name = "format_rate" if column == "format rate" else metric
            bounds = [f"{name}_lo", f"{name}_hi"] if f"{name}_lo" in source else []
            found = re.fullmatch(rf"{number} \[{number}, {number}\]" if bounds else number, cell)
            assert found, (row[0], column, cell)
            expected = [source[c] for c in (name, *bounds)]
            assert all(_close(f, v) for f, v in zip(found.groups(), expected, strict=True)), (row[0], column)
            assert len({len(f.partition(".")[2]) for f in found.groups()}) == 1  # rounded alike
            checked += len(expected)
    assert checked >= len(rows) * (len(header) - 1) > 0


@pytest.mark.parametrize("page", [study.README, study.FINDINGS], ids=["README", "findings"])
def test_the_readme_claims_equal_the_published_claims_csv(page: Path) -> None:
    claims = pd.read_csv(study.PUBLISHED / "eval" / "claims.csv")
    k = json.loads((study.PUBLISHED / "config.json").read_text())["k"]
    header, rows = _section_rows("claim", page)
    assert header == ["claim", "in plain words", "verdict"]
    shown = study.short_verdict if page == study.README else str  # the README gives GRPO's reason once, below
    assert [tuple(r) for r in rows] == [
        (c, report.plain(c, k), shown(v)) for c, v in zip(claims["claim"], claims["verdict"], strict=True)
    ]


def test_the_published_files_use_both_maj_at_k_names() -> None:
    results = pd.read_csv(study.PUBLISHED / "eval" / "results.csv")
    paired = pd.read_csv(study.PUBLISHED / "eval" / "paired.csv")
    k = json.loads((study.PUBLISHED / "config.json").read_text())["k"]
    assert {f"maj_half@{k}", f"maj_vote@{k}", f"maj_half@{k}_lo"} <= set(results.columns)
    assert set(paired["metric"]) <= {"pass@1", f"pass@{k}", f"maj_half@{k}", f"maj_vote@{k}"}
    texts = [*results.columns, *paired["metric"], (study.PUBLISHED / "eval" / "claims.csv").read_text()]
    # a bare maj@k only where claim 2 names the original study's reading of it
    assert not any(re.search(r"(?<![\w])(?<!study's )maj@|majority_vote", t) for t in texts)


def test_the_published_verdicts_say_which_grpo_arm_did_not_train() -> None:
    """Each claim resting on a GRPO arm says it did not train exactly when the arm's published record says so
    (`plateau.did_not_train`), and the README gives each reason once."""
    claims = pd.read_csv(study.PUBLISHED / "eval" / "claims.csv", keep_default_na=False)
    arms = {}
    for arm in evaluation.GRPO_ARMS:
        compute = json.loads((study.PUBLISHED / "models" / arm / "manifest.json").read_text())["compute"]
        arms[arm] = plateau.did_not_train(compute)
    for claim, verdict in zip(claims["claim"], claims["verdict"], strict=True):
        resting = evaluation.RESTS_ON.get(report.label(claim), ())
        untrained = {a: arms[a] for a in resting if arms[a] is not None}
        if (
            untrained
            and not verdict.startswith("not tested")
            and not verdict.startswith("GRPO did not train (its")
        ):
            assert verdict == evaluation.did_not_train(untrained), claim
        elif not untrained:
            assert not evaluation.UNTRAINED.match(verdict) or verdict.startswith("GRPO did not train (its"), (
                claim
            )
    for why in filter(None, arms.values()):
        assert why in study.readme_section()


def test_the_published_report_shows_numbers_rounded() -> None:
    text = (study.PUBLISHED / "REPORT.md").read_text()
    tables = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    assert not re.search(r"\d\.\d{5,}", tables)


def test_the_readme_and_findings_sections_are_the_ones_their_published_files_give() -> None:
    assert study.readme_section() == study.summary()
    assert study.readme_section(study.FINDINGS) == study.section(link="../outputs/published/cpu-study")


def test_the_published_study_ran_the_profile_as_it_stands() -> None:
    """The published run's identity (every setting but 09's) is the profile's now; 09's settings, if the run
    predates them, are named in the README."""
    record = json.loads((study.PUBLISHED / study.RECORD).read_text())
    assert record["config_hash"] == config.config_hash(config.resolve(study.PROFILE)), (
        "the cpu-study profile changed since the published run: rerun `make study` and publish it"
    )
    settings = json.loads((study.PUBLISHED / "config.json").read_text())
    added = study.added_since(settings)
    assert set(added) <= set(config.LATER_STEP_SETTINGS)
    if added:
        assert f"settings added since ({', '.join(added)})" in study.readme_section(study.FINDINGS)
        assert "This run predates `09_large_k`" in study.readme_section()
    current = config.later_settings(config.resolve(study.PROFILE))
    assert {key: settings[key] for key in current if key in settings} == {
        key: value for key, value in current.items() if key in settings
    }, "09's settings changed since the published run: rerun `make study` and publish it"


def test_the_findings_show_the_published_figures_and_say_where_the_study_ran() -> None:
    text = study.readme_section(study.FINDINGS)
    record = json.loads((study.PUBLISHED / study.RECORD).read_text())
    for name in study.SHOWN:
        path = study.PUBLISHED / name
        assert path.read_bytes().startswith(PNG)
        assert f"(../{path.relative_to(study.ROOT).as_posix()})" in text
    assert record["commit"], "publish a run made in a git checkout"
    assert record["commit"][:12] in text and f"{record['series_wall_s'] / 60:.1f} min" in text
    assert f"{record['series_wall_s'] / 60:.1f} min" in study.readme_section()
    readme = study.README.read_text()
    assert readme.index("## Quick start") < readme.index("## What the series finds")
    assert "](docs/findings.md)" in study.readme_section()


# `publish` on a made-up finished run.


def _graded(rng: np.random.Generator, k: int = 4, n: int = 6) -> pd.DataFrame:
    rows = []
    for variant, p in (("base", 0.2), ("SFT_1", 0.5)):
        for problem in range(n):
            for idx in range(k):
                right, formatted = bool(rng.random() < p), bool(rng.random() < 0.5)
                answer = "7" if right else "3"
                rows.append(
                    {
                        "variant": variant,
                        "problem_id": f"p{problem}",
                        "sample_idx": idx,
                        "gold": "7",
                        "lenient_correct": right,
                        "strict_correct": right and formatted,
                        "has_format": formatted,
                        "pred_lenient": answer,
                        "pred_strict": answer if formatted else None,
                        "n_tokens": 50,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A run directory as `make study` leaves it (made-up samples)."""
    run = tmp_path / "outputs" / "cpu-study"
    cfg = config.resolve(study.PROFILE)
    digest = config.config_hash(cfg)
    files.atomic_write_text(run / "config.json", json.dumps({**config.to_dict(cfg), "config_hash": digest}))
    later = config.later_settings(cfg)
    timings = {
        s.name: {"wall_s": 60.0, "config_hash": digest, **({"settings": later} if s.reads else {})}
        for s in pipeline.STEPS
    }
    files.atomic_write_text(run / pipeline.TIMINGS, json.dumps(timings))
    graded = _graded(np.random.default_rng(0), k=cfg.k)
    (run / "eval").mkdir()
    metrics.summarize(graded, n_boot=50).to_csv(run / "eval" / "results.csv", index=False)
    evaluation.paired(graded, n_boot=50).to_csv(run / "eval" / "paired.csv", index=False)
    claims = [evaluation.Claim("1. A claim", "holds", "+0.100 [+0.050, +0.150]")]
    pd.DataFrame([c.__dict__ for c in claims]).set_index("claim").to_csv(run / "eval" / "claims.csv")
    files.atomic_write_text(run / "eval" / "efficiency.csv", "variant\nSFT_1\n")
    files.atomic_write_text(run / "REPORT.md", "# Report\n")
    crossover, covered = large_k.crossovers(graded, n_boot=50), large_k.coverage(graded, n_boot=50)
    tables = {"curves": large_k.curves(graded, n_boot=50), "crossover": crossover, "coverage": covered}
    tables["claim"] = pd.DataFrame([large_k.claim(crossover, covered, 4).__dict__])
    for name, table in tables.items():
        files.atomic_write_text(run / large_k.TABLES[name], table.to_csv(index=False))
    for name in (
        "06_grpo_rewards",
        "08_pass_at_k",
        "08_format_breakdown",
        "08_metrics",
        "09_pass_at_k_lenient",
    ):
        files.atomic_write_bytes(run / "figures" / f"{name}.png", PNG + name.encode())
    for arm, rises in (("GRPO", 0), ("GRPO_filtered", 2)):
        compute = {
            "prompts_consumed": 32,
            "prompts_available": 64,
            "stopped_early_at_step": 8 if not rises else None,
        }
        compute.update(
            window=8, windows=4, reward_rises=rises, first_window_reward=0.2, last_window_reward=0.5
        )
        files.atomic_write_text(run / "models" / arm / "manifest.json", json.dumps({"compute": compute}))
        files.atomic_write_text(
            run / "models" / arm / "groups.csv", "prompt,reward,zero_spread\n1,0.5,False\n"
        )
        files.atomic_write_text(run / "models" / arm / "log_history.csv", "step,reward\n1,0.5\n")
        files.atomic_write_bytes(run / "figures" / f"train_{arm}.png", PNG)
    for step in pipeline.STEPS:  # executed notebooks that name this machine's paths
        text = json.dumps(
            {"cells": [{"source": f"run_dir = '{run.resolve()}'", "outputs": [f"{Path.home()}/x"]}]}
        )
        files.atomic_write_text(run / "executed" / f"{step.name}.ipynb", text)
    return run


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text(
        f"# Title\n\n## What the series finds\n\n{study.START}\nold text\n{study.END}\n\n## Next\n"
    )
    return path


@pytest.fixture
def findings(tmp_path: Path) -> Path:
    path = tmp_path / "docs" / "findings.md"
    path.parent.mkdir()
    path.write_text(f"# In full\n\n{study.START}\nold tables\n{study.END}\n\n## Reading\n")
    return path


def test_publish_copies_the_run_and_writes_the_readme_and_findings_between_their_markers(
    finished_run: Path, readme: Path, findings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no git checkout around the run
    dest = tmp_path / "outputs" / "published" / "cpu-study"
    (dest / "figures").mkdir(parents=True)
    (dest / "figures" / "08_gone.png").write_bytes(PNG)  # a figure of an earlier study: not kept
    study.publish(finished_run, dest, readme, findings)
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    figures = ["figures/08_format_breakdown.png", "figures/08_metrics.png", "figures/08_pass_at_k.png"]
    figures += ["figures/09_pass_at_k_lenient.png", "figures/06_grpo_rewards.png"]
    figures += ["figures/train_GRPO.png", "figures/train_GRPO_filtered.png"]
    notebooks = [f"notebooks/{s.name}.ipynb" for s in pipeline.STEPS]
    assert copied == sorted([*study.COPIED, *figures, *notebooks, study.RECORD])
    executed = (dest / "notebooks" / "06_grpo.ipynb").read_text()
    assert "run_dir = 'outputs/cpu-study'" in executed and "~/x" in executed  # no path of this machine
    assert str(tmp_path) not in executed and str(Path.home()) not in executed
    assert (dest / "eval" / "results.csv").read_bytes() == (
        finished_run / "eval" / "results.csv"
    ).read_bytes()
    record = json.loads((dest / study.RECORD).read_text())
    assert record["series_wall_s"] == 60.0 * len(pipeline.STEPS) and record["command"] == "make study"
    assert record["published_with"] == "python -m helpers.study publish outputs/cpu-study"
    assert record["commit"] is None  # tmp_path is no git checkout
    text, full = readme.read_text(), findings.read_text()
    assert text.startswith("# Title\n\n## What the series finds\n\n") and text.endswith(
        f"{study.END}\n\n## Next\n"
    )
    assert full.startswith("# In full\n\n") and full.endswith(f"{study.END}\n\n## Reading\n")
    assert "old text" not in text and "old tables" not in full
    assert study.readme_section(readme) == study.summary(dest, "outputs/published/cpu-study")
    assert study.readme_section(findings) == study.section(dest, "../outputs/published/cpu-study")
    assert "](outputs/published/cpu-study/REPORT.md)" in text and "](docs/findings.md)" in text
    assert "](../outputs/published/cpu-study/figures/08_pass_at_k.png)" in full
    row = f"| 1. A claim | {report.plain('1. A claim', config.resolve(study.PROFILE).k)} | holds |"
    assert row in text and row in full
    assert "unknown" in full and f"{len(pipeline.STEPS):.1f} min for steps 01-09" in full
    assert "**Claim 1 at large k** (`09_large_k`: 6 test problems x 8 samples" in full
    assert "](../outputs/published/cpu-study/figures/09_pass_at_k_lenient.png)" in full
    assert "predates `09_large_k`" not in text
    assert "](outputs/published/cpu-study/notebooks/06_grpo.ipynb)" in text  # the executed notebooks
    assert "](../outputs/published/cpu-study/notebooks/06_grpo.ipynb)" in full
    assert "](outputs/published/cpu-study/figures/06_grpo_rewards.png)" in text
    assert "| GRPO | 32 of 64 | by the plateau rule at step 8 | 4 x 8 prompts |" in text and "| no |" in text
    assert "| GRPO_filtered | 32 of 64 | no: its prompts ran out |" in full
    files.atomic_write_text(readme, text.replace(" | holds |", " | edited |"))
    files.atomic_write_text(findings, full.replace(" | holds |", " | edited |"))
    study.write_readme(dest, readme, findings)  # the sections again, from the published files alone
    assert readme.read_text() == text and findings.read_text() == full


def test_publish_refuses_an_unfinished_run_and_writes_nothing(
    finished_run: Path, readme: Path, findings: Path, tmp_path: Path
) -> None:
    timings = json.loads((finished_run / pipeline.TIMINGS).read_text())
    del timings["06_grpo"]
    timings["08_evaluation"]["config_hash"] = "000000000000"  # a step of other settings
    files.atomic_write_text(finished_run / pipeline.TIMINGS, json.dumps(timings))
    before = readme.read_text()
    with pytest.raises(
        files.BadInput, match="has not finished 06_grpo, 08_evaluation: run `make study` again"
    ):
        study.publish(finished_run, tmp_path / "dest", readme, findings)
    assert readme.read_text() == before and not (tmp_path / "dest").exists()


def test_publish_refuses_a_run_without_its_figures_or_a_readme_without_markers(
    finished_run: Path, readme: Path, findings: Path, tmp_path: Path
) -> None:
    (finished_run / "figures" / "08_format_breakdown.png").unlink()
    with pytest.raises(files.BadInput, match="lacks figures/08_format_breakdown.png"):
        study.publish(finished_run, tmp_path / "dest", readme, findings)
    files.atomic_write_bytes(finished_run / "figures" / "08_format_breakdown.png", PNG)
    readme.write_text("# Title\n")
    with pytest.raises(files.BadInput, match="has no study section: put the lines"):
        study.publish(finished_run, tmp_path / "dest", readme, findings)
    assert not (tmp_path / "dest").exists()
    with pytest.raises(files.BadInput, match="holds no run"):
        study.publish(tmp_path / "nothing", tmp_path / "dest", readme, findings)


def test_publish_refuses_another_profile_and_a_checkout_the_numbers_do_not_belong_to(
    finished_run: Path, readme: Path, findings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    dest = tmp_path / "dest"
    smoke = config.resolve("smoke")
    digest = config.config_hash(smoke)
    other = tmp_path / "smoke-run"
    files.atomic_write_text(
        other / "config.json", json.dumps({**config.to_dict(smoke), "config_hash": digest})
    )
    with pytest.raises(files.BadInput, match="is a 'smoke' run; only a 'cpu-study' run is published"):
        study.publish(other, dest, readme, findings)

    def git(*args: str) -> None:
        identity = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "-C", str(tmp_path), *identity, *args], check=True)

    earlier = time.time() - 60
    os.utime(finished_run / "config.json", (earlier, earlier))  # the run started a minute before the commit
    git("init", "-q")
    git("add", "README.md", "docs")
    git("commit", "-q", "-m", "a commit made after the run started")
    with pytest.raises(
        files.BadInput, match="committed after the run started: the run was made by an earlier"
    ):
        study.publish(finished_run, dest, readme, findings)
    later = time.time() + 60
    os.utime(finished_run / "config.json", (later, later))  # the run started after the commit
    files.atomic_write_text(readme, readme.read_text() + "an edit\n")
    with pytest.raises(
        files.BadInput, match="has uncommitted changes .*M README.md.*Run the study from a clean"
    ):
        study.publish(finished_run, dest, readme, findings)
    assert not dest.exists()
    git("commit", "-q", "-am", "the edit")
    os.utime(finished_run / "config.json", (later + 60, later + 60))
    study.publish(finished_run, dest, readme, findings)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert json.loads((dest / study.RECORD).read_text())["commit"] == head.stdout.strip()
    assert f"**Commit:** `{head.stdout.strip()[:12]}`" in findings.read_text()


def test_a_claim_that_quotes_a_pipe_or_a_line_break_keeps_the_table_whole() -> None:
    claims = pd.DataFrame([{"claim": "6. A | claim", "verdict": "not tested", "evidence": "error:\nx | y"}])
    table = report.markdown_table(claims.set_index("claim")).splitlines()
    assert table[2] == "| 6. A \\| claim | not tested | error: x \\| y |"
