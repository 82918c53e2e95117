"""The CPU study in the README: a finished run's results published beside it, and its sections written from them.

After `make study`, `python -m helpers.study publish outputs/cpu-study` copies the run's tables, claims, figures,
config, timings, the GRPO arms' records and its executed notebooks (this machine's paths taken out) into
`outputs/published/cpu-study/` with a record of where it ran (`study.json`: commit, machine, wall time), then
rewrites, from those files alone, the README's summary (the claims in plain words) and
`docs/findings.md` (every table and figure), each between the study's two markers; `python -m helpers.study
readme` rewrites both again from the published files. `tests/unit/test_study.py` checks that they say what the
published files say.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from helpers import config, evaluation, files, large_k, metrics, pipeline, plateau, report, runs, training

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FINDINGS = ROOT / "docs" / "findings.md"
PUBLISHED = ROOT / "outputs" / "published" / "cpu-study"
START = "<!-- cpu-study: written by `python -m helpers.study publish` from outputs/published/cpu-study/ -->"
END = "<!-- cpu-study: end -->"
RECORD = "study.json"
PROFILE = "cpu-study"
TABLES = ("results.csv", "paired.csv", "claims.csv", "efficiency.csv")
# Each GRPO arm's record: the rule's reading of its groups (manifest), the groups and the training log.
ARM_FILES = ("manifest.json", training.GROUPS, training.HISTORY)
COPIED = (
    runs.CONFIG_FILE,
    pipeline.TIMINGS,
    "REPORT.md",
    *(f"eval/{name}" for name in TABLES),
    *large_k.TABLES.values(),
    *(f"models/{arm}/{name}" for arm in evaluation.GRPO_ARMS for name in ARM_FILES),
)
# The executed notebooks, one per step, published under notebooks/ with this machine's paths taken out (`scrub`).
EXECUTED = "executed"
NOTEBOOKS = "notebooks"
# Every figure of 06, 08 and 09, and the GRPO arms' training curves; the pages show the GRPO windows, 2 of 08's
# and 1 of 09's.
FIGURES = ("figures/06_*.png", "figures/08_*.png", "figures/09_*.png", "figures/train_GRPO*.png")
SHOWN_GRPO = {
    "figures/06_grpo_rewards.png": "GRPO and GRPO_filtered: mean correctness and format reward per window of "
    "prompts, with 2 standard errors",
}
SHOWN = {
    "figures/08_pass_at_k.png": "pass@k for k = 1 to {k}, every variant, under each checker",
    "figures/08_format_breakdown.png": "right vs formatted: the share of samples in each combination",
}
SHOWN_LARGE_K = {large_k.FIGURE.format(checker="lenient"): "pass@k to k = {n} on a log axis, lenient checker"}
CHECKERS = ("lenient", "strict")  # the README's columns, in this order


def publish(run_dir: Path, dest: Path = PUBLISHED, readme: Path = README, findings: Path = FINDINGS) -> Path:
    """Copy a finished study's results into `dest` (replacing what was there) and rewrite the study's sections
    of `readme` and `findings`.

    Everything is checked before anything is written: the run is a `cpu-study` run that finished every step
    with its config and has its tables and figures, its checkout has no uncommitted changes and no commit
    newer than the run, and both pages have the markers. `dest` is swapped in whole, then the pages rewritten.
    """
    run_dir = Path(run_dir)
    settings = runs.read_config(run_dir / runs.CONFIG_FILE)
    if settings is None or not set(settings) >= config.FIELDS:
        raise files.BadInput(
            f"{run_dir} holds no run of this version of the series (its {runs.CONFIG_FILE} is missing or lacks "
            "settings). Run `make study` first."
        )
    if settings["profile"] != PROFILE:
        raise files.BadInput(
            f"{run_dir} is a {settings['profile']!r} run; only a {PROFILE!r} run is published (`make study`)."
        )
    timings = pipeline.read_timings(run_dir / pipeline.TIMINGS)
    cfg = config.from_dict(settings)
    unfinished = [s.name for s in pipeline.STEPS if not pipeline.ran_with(s, timings, cfg)]
    if unfinished:
        raise files.BadInput(
            f"{run_dir} has not finished {', '.join(unfinished)}: run `make study` again (it resumes), then publish."
        )
    notebooks = [f"{EXECUTED}/{s.name}.ipynb" for s in pipeline.STEPS]
    needed = (*COPIED, *SHOWN, *SHOWN_LARGE_K, *SHOWN_GRPO, *notebooks)
    absent = [name for name in needed if not (run_dir / name).is_file()]
    if absent:
        raise files.BadInput(
            f"{run_dir} lacks {', '.join(absent)}: rerun its evaluation (python -m helpers.pipeline run "
            f"--profile {PROFILE} --run-dir {run_dir} --only 08,09 --force), then publish."
        )
    for page in (readme, findings):
        _split(page.read_text(encoding="utf-8"), page)  # the markers are there
    study_dir = "outputs/cpu-study" if run_dir.parts[-2:] == ("outputs", "cpu-study") else str(run_dir)
    record = {
        "profile": PROFILE,
        "config_hash": settings["config_hash"],
        "command": "make study" if study_dir == "outputs/cpu-study" else f"make study STUDY_DIR={study_dir}",
        "published_with": f"python -m helpers.study publish {study_dir}",
        "commit": _commit(run_dir),
        "machine": machine(),
        "series_wall_s": round(sum(timings[s.name]["wall_s"] for s in pipeline.STEPS), 1),
    }
    figures = sorted(p.relative_to(run_dir).as_posix() for pattern in FIGURES for p in run_dir.glob(pattern))

    def write(tmp: Path) -> None:
        for name in (*COPIED, *figures):
            files.atomic_write_bytes(tmp / name, (run_dir / name).read_bytes())
        for name in notebooks:
            text = scrub(
                (run_dir / name).read_text(encoding="utf-8"), run_dir, f"outputs/{run_dir.resolve().name}"
            )
            files.atomic_write_text(tmp / NOTEBOOKS / Path(name).name, text)
        files.atomic_write_text(tmp / RECORD, json.dumps(record, indent=2) + "\n")
        section(tmp, _link(dest, findings))  # the files make a section before they go in

    files.write_dir_atomically(dest, write)
    return write_readme(dest, readme, findings)


def scrub(text: str, run_dir: Path, shown_as: str) -> str:
    """`text` without this machine's paths: the run directory (as given and resolved) becomes `shown_as`
    (`outputs/cpu-study`), the checkout around it and this one `.`, the home directory `~` and the temporary
    directory `$TMPDIR`, each replaced where a path begins and ends, not inside another name."""
    given = Path(os.path.abspath(run_dir))
    places = {str(given): shown_as, str(given.resolve()): shown_as}
    for run in (given, given.resolve()):
        if run.parent.name == "outputs":
            places.setdefault(str(run.parent.parent), ".")
    places.setdefault(str(ROOT), ".")
    places.setdefault(str(Path.home()), "~")
    places.setdefault(tempfile.gettempdir(), "$TMPDIR")
    # the longest first: a run directory inside the checkout goes before the checkout
    for path in sorted(places, key=len, reverse=True):
        if path not in ("/", ""):
            found = re.compile(rf"(?<![\w.-]){re.escape(path)}(?![\w.-])")
            text = found.sub(lambda _, shown=places[path]: shown, text)
    return text


def _link(target: Path, page: Path) -> str:
    """`target` as a relative link from `page`."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def write_readme(dest: Path = PUBLISHED, readme: Path = README, findings: Path = FINDINGS) -> Path:
    """Rewrite the study's sections of `readme` (the summary) and `findings` (every table) from the files
    published in `dest` (after a change to `summary` or `section`, or a publish whose page writes failed): no run
    needed. Returns `readme`."""
    texts = {
        findings: section(dest, _link(dest, findings)),
        readme: summary(dest, _link(dest, readme), _link(findings, readme)),
    }
    for page, text in texts.items():
        before, _, after = _split(page.read_text(encoding="utf-8"), page)
        files.atomic_write_text(page, before + text + after)
    return readme


def _split(text: str, readme: Path) -> tuple[str, str, str]:
    """The README before the section (through START's line), the section, and the rest (from END)."""
    head, start, rest = text.partition(START)
    body, end, tail = rest.partition(END)
    if not start or not end:
        raise files.BadInput(
            f"{readme} has no study section: put the lines {START!r} and {END!r} where it belongs, then publish."
        )
    return head + start + "\n", body.strip("\n"), "\n" + end + tail


def readme_section(page: Path = README) -> str:
    """The study's section of `page` (the README, or `FINDINGS`) as it stands (between the markers)."""
    return _split(page.read_text(encoding="utf-8"), page)[1]


def _commit(run_dir: Path) -> str | None:
    """The commit of the checkout the run directory sits in (None outside one), refused when the checkout has
    uncommitted changes or a commit newer than the run: the published numbers must be that commit's."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(run_dir), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit, changed = git("rev-parse", "HEAD"), git("status", "--porcelain", "-uno")
        committed = int(git("log", "-1", "--format=%ct"))
    except (OSError, subprocess.CalledProcessError):
        return None
    if changed:
        raise files.BadInput(
            f"The checkout of {run_dir} has uncommitted changes ({changed.splitlines()[0].strip()} ...): the "
            "results would belong to no commit. Run the study from a clean clone, then publish."
        )
    started = (run_dir / runs.CONFIG_FILE).stat().st_mtime
    if committed > started:
        raise files.BadInput(
            f"The checkout of {run_dir} is at {commit[:12]}, committed after the run started: the run was made "
            "by an earlier commit. Check that commit out to publish, or rerun the study at this one."
        )
    return commit


def machine() -> str:
    """This machine in a few words: CPU model and core count."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def _read(published: Path) -> tuple[dict, dict, dict, pd.DataFrame, pd.DataFrame]:
    """The published files both pages are written from: the record, settings, timings, results and claims."""
    record, settings, timings = (
        json.loads((published / name).read_text(encoding="utf-8"))
        for name in (RECORD, runs.CONFIG_FILE, pipeline.TIMINGS)
    )
    results = pd.read_csv(published / "eval" / "results.csv")
    claims = pd.read_csv(published / "eval" / "claims.csv", keep_default_na=False)
    return record, settings, timings, results, claims


def _data_set(settings: dict) -> str:
    return "the generated toy set" if settings["dataset"] == "arithmetic" else "GSM8K"


def _step_range(timings: dict) -> str:
    """The steps a run's timings cover, as `01-08`."""
    names = sorted(timings)
    return f"{names[0][:2]}-{names[-1][:2]}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _cell(row: pd.Series, metric: str) -> str:
    if f"{metric}_lo" not in row:
        return report.format_number(row[metric])
    return report.format_interval(row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"])


def results_table(results: pd.DataFrame, k: int) -> str:
    """One row per variant: pass@1, pass@k, maj_half@k and maj_vote@k with their intervals (where the table has
    them) under each checker, rounded by `report`'s rule, and the format rate."""
    names = ("pass@1", f"pass@{k}", metrics.MAJ_HALF.format(k=k), metrics.MAJ_VOTE.format(k=k))
    header = ["variant", *(f"{m} {c}" for c in CHECKERS for m in names), "format rate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, part in results.groupby("variant", sort=False):
        rows = part.set_index("checker")
        cells = [_cell(rows.loc[c], m) for c in CHECKERS for m in names]
        lines.append(
            f"| {variant} | "
            + " | ".join(cells)
            + f" | {report.format_number(rows.iloc[0]['format_rate'])} |"
        )
    return "\n".join(lines)


def short_verdict(verdict: str) -> str:
    """A verdict without the reason a GRPO arm did not train, for a table under which that reason is given once."""
    found = evaluation.UNTRAINED.match(verdict)
    return f"{found['arms']} did not train" if found else verdict


def claims_table(claims: pd.DataFrame, k: int, short: bool = False) -> str:
    """One row per claim: the claim as `eval/claims.csv` states it, in plain words, and its verdict (`short`:
    without the reason GRPO did not train)."""
    table = pd.DataFrame(
        {
            "claim": claims["claim"],
            "in plain words": [report.plain(c, k) for c in claims["claim"]],
            "verdict": [short_verdict(v) if short else v for v in claims["verdict"]],
        }
    )
    return report.markdown_table(table.set_index("claim"))


def interval_widths(paired: pd.DataFrame, checker: str = "lenient") -> dict[str, tuple[float, float]]:
    """Per metric, the half-width of the paired intervals (variant minus base): (widest, median) over variants."""
    part = paired[paired["checker"] == checker]
    found: dict[str, tuple[float, float]] = {}
    for metric, rows in part.groupby("metric", sort=False):
        half = ((rows["hi"] - rows["lo"]) / 2).tolist()
        found[metric] = (max(half), statistics.median(half))
    return found


def section(published: Path = PUBLISHED, link: str | None = None) -> str:
    """The study in full (`docs/findings.md`), from the published files alone; `link`: the folder as that page
    links it (`published` relative to the repository, by default)."""
    record, settings, timings, results, claims = _read(published)
    paired = pd.read_csv(published / "eval" / "paired.csv")
    where = link or published.relative_to(ROOT).as_posix()
    k, n_test = settings["k"], results["n_problems"].iloc[0]
    vote = metrics.MAJ_VOTE.format(k=k)
    steps = ", ".join(f"{name[:2]} {_minutes(t['wall_s'])}" for name, t in timings.items())
    widths = interval_widths(paired)
    reached = "; ".join(f"{m} ±{wide:.2f} (median ±{mid:.2f})" for m, (wide, mid) in widths.items())
    parts = [
        f"One run of the `{record['profile']}` profile: `{settings['model']}` on {_data_set(settings)}, "
        f"{settings['n_train']} training and {n_test} test problems, k={k} samples per problem at "
        f"T={settings['temperature']}, "
        f"every variant of the series (config `{record['config_hash']}`).",
        "",
        f"- **Command:** `{record['command']}`, then `{record['published_with']}` (which wrote this part).",
        f"- **Commit:** `{(record['commit'] or 'unknown')[:12]}`. **Machine:** {record['machine']}.",
        f"- **Wall time:** {_minutes(record['series_wall_s'])} for steps {_step_range(timings)} (per step: {steps}).",
        f"- **Files:** [`{where}/`]({where}/): `results.csv`, `paired.csv`, `claims.csv`, the figures and the "
        f"run's own [`REPORT.md`]({where}/REPORT.md) (the numbers behind each verdict, checker disagreements, "
        "costs, gain per token).",
        f"- **Executed notebooks:** {executed_links(where)}.",
        "",
        f"**The original study's claims at toy scale** (95 % paired bootstrap intervals over the {n_test} test "
        "problems; the verdict rules are in [evaluation](evaluation.md#the-claims)):",
        "",
        claims_table(claims, k),
        "",
        *_grpo_part(published, where),
        "**Every variant** (lenient: the answer a human grader would accept; strict: only a `#### <number>` "
        f"line counts), with 95 % bootstrap intervals over problems. {metrics.MAJ_DEFINITIONS.format(k=k)}"
        + ("" if f"{vote}_lo" in results else f" This run predates the intervals of {vote}."),
        "",
        results_table(results, k),
        "",
        f"Paired intervals reached (each variant minus the base, lenient; half-width, widest over the "
        f"{paired['variant'].nunique()} variants): {reached}.",
        "",
        *(f"![{alt.format(k=k)}]({where}/{name})\n" for name, alt in SHOWN.items()),
        *_large_k_part(published, settings, where),
    ]
    return "\n".join(parts).strip("\n")


def _untrained_note(claims: pd.DataFrame) -> list[str]:
    """Why a GRPO arm did not train, once, under a table whose verdicts leave the reason out."""
    found = [evaluation.UNTRAINED.match(v) for v in claims["verdict"]]
    reasons = dict.fromkeys(f"**{m['arms']} did not train**: {m['why']}." for m in found if m)
    return [*reasons, ""] if reasons else []


def grpo_arms(published: Path) -> pd.DataFrame:
    """One row per GRPO arm of the published run: the prompts it had and used, where the plateau rule stopped it,
    its windows and how often the reward rose above the reference, from its manifest's compute record."""
    rows = {}
    for arm in evaluation.GRPO_ARMS:
        compute = json.loads((published / "models" / arm / "manifest.json").read_text(encoding="utf-8"))[
            "compute"
        ]
        stopped = compute["stopped_early_at_step"]
        rows[arm] = {
            "prompts used": f"{compute['prompts_consumed']} of {compute['prompts_available']}",
            "stopped": f"by the plateau rule at step {stopped}" if stopped else "no: its prompts ran out",
            "windows": f"{compute['windows']} x {compute['window']} prompts",
            "windows that rose": compute["reward_rises"],
            "reward, first window": report.format_number(compute["first_window_reward"]),
            "reward, last window": report.format_number(compute["last_window_reward"]),
            "reward rose beyond the noise": "no" if plateau.did_not_train(compute) else "yes",
        }
    return pd.DataFrame(rows).T.rename_axis("arm")


def _grpo_part(published: Path, where: str) -> list[str]:
    """The GRPO arms: how far each trained and its reward curves, correctness and format apart."""
    return [
        "**The GRPO arms** (`06_grpo`; total reward = correctness + format, 0-2; the plateau rule and the "
        "did-not-train rule: [`helpers/plateau.py`](" + _repo_link(where, "helpers/plateau.py") + ")):",
        "",
        report.markdown_table(grpo_arms(published)),
        "",
        *(f"![{alt}]({where}/{name})\n" for name, alt in SHOWN_GRPO.items()),
    ]


def _repo_link(where: str, path: str) -> str:
    """`path` (relative to the repository) as linked from the page that links the published folder as `where`."""
    depth = where.count("/") - 2  # where: [../]outputs/published/cpu-study
    return "../" * depth + path


def executed_links(where: str) -> str:
    """Links to the run's executed notebooks, one per step, as a page linking the folder as `where` gives them."""
    return ", ".join(f"[{s.name[:2]}]({where}/{NOTEBOOKS}/{s.name}.ipynb)" for s in pipeline.STEPS)


def summary(published: Path = PUBLISHED, link: str | None = None, full: str = "docs/findings.md") -> str:
    """The README's part of the study, from the published files alone: what ran, each claim in plain words with
    its verdict, and where the rest is (`full`: the findings page as the README links it; `link`: the folder)."""
    record, settings, timings, results, claims = _read(published)
    where = link or published.relative_to(ROOT).as_posix()
    k, n_test = settings["k"], results["n_problems"].iloc[0]
    large = (
        ""
        if (published / large_k.TABLES["crossover"]).is_file()
        else " This run predates `09_large_k`: claim 1 has no verdict at large k yet."
    )
    parts = [
        f"**The CPU study** (`{record['profile']}` profile, `{record['command']}`, "
        f"{_minutes(record['series_wall_s'])} for steps {_step_range(timings)} on {record['machine']}): "
        f"`{settings['model']}` on {_data_set(settings)}, "
        f"{settings['n_train']} training and {n_test} test problems, k={k} samples per problem, every variant; "
        "verdicts from 95 % paired bootstrap intervals over the test problems.",
        "",
        claims_table(claims, k, short=True),
        "",
        *_untrained_note(claims),
        *_grpo_part(published, where),
        f"**The run's notebooks, executed** (every output, to read without running anything): "
        f"{executed_links(where)}.",
        "",
        f"Every table and figure, and what transfers to the GPU experiment: [the CPU study in full]({full}). The "
        f"numbers behind each verdict: the run's own [`REPORT.md`]({where}/REPORT.md).{large}",
    ]
    return "\n".join(parts).strip("\n")


def added_since(settings: dict) -> list[str]:
    """The settings of the current profile that a published run's `settings` lack (added to the series since)."""
    return sorted(config.FIELDS - set(settings))


def _large_k_part(published: Path, settings: dict, where: str) -> list[str]:
    """Claim 1 at large k (09): its crossover table and figure, or, for a run that predates 09, what it lacks."""
    crossover = published / large_k.TABLES["crossover"]
    if not crossover.is_file():
        added = added_since(settings)
        return [
            f"This run predates `09_large_k` (claim 1 tested at large k): it has no large-k verdict, and the "
            f"settings added since ({', '.join(added) or 'none'}) are not in its config. `make study` now runs 09 "
            "too; the next published run shows its crossovers here.",
        ]
    table = pd.read_csv(crossover)
    table = table[table["checker"] == "lenient"]
    if table.empty:
        return ["`09_large_k` ran with no trained variant to set beside the base."]
    n, m = int(table["n"].iloc[0]), int(table["n_problems"].iloc[0])
    return [
        f"**Claim 1 at large k** (`09_large_k`: {m} test problems x {n} samples; lenient; the crossover is the "
        "smallest k at which the base's pass@k lies above the variant's and from which it never lies below again, "
        "with its 95 % interval):",
        "",
        report.markdown_table(large_k.crossover_table(table).drop(columns="checker")),
        "",
        *(f"![{alt.format(n=n)}]({where}/{name})\n" for name, alt in SHOWN_LARGE_K.items()),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.study", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("publish", help="copy a finished run's results and rewrite the README's section")
    go.add_argument("run_dir", type=Path, help="e.g. outputs/cpu-study")
    sub.add_parser("readme", help="rewrite the README's section from the files already published")
    args = parser.parse_args(argv)
    try:
        readme = publish(args.run_dir) if args.command == "publish" else write_readme()
    except (files.BadInput, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{readme} rewritten between its study markers from {PUBLISHED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
