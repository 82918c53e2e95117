"""Every relative link and image in README.md and docs/ points at a file that exists (and a heading, for `#anchor`).

Run: `pytest tests/test_docs_links.py`. Links to the web (http, https, mailto) are not fetched: CI has no web.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), the target up to the first space or closing parenthesis; code spans and
# fenced blocks are removed first, so a link shown as code is not checked
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def links(text: str) -> list[str]:
    """The link and image targets of a markdown text, outside code."""
    return LINK.findall(CODE.sub("", FENCE.sub("", text)))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def test_link_extraction_skips_code_and_reads_images() -> None:
    text = 'see [a](docs/a.md) and ![fig](x.png "title")\n`[not](this.md)`\n```\n[nor](that.md)\n```\n'
    assert links(text) == ["docs/a.md", "x.png"]


def test_anchor_follows_github() -> None:
    assert anchor("What the series finds") == "what-the-series-finds"
    assert anchor("Claim 1 at large k (`09_large_k`)") == "claim-1-at-large-k-09_large_k"
    assert anchor("The GPU and Colab route") == "the-gpu-and-colab-route"


def test_docs_exist_and_the_readme_links_each_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in PAGES[1:])
    assert pages, "docs/ holds no page"
    unlinked = [
        p
        for p in pages
        if f"docs/{p}" not in links(readme) and not any(t.startswith(f"docs/{p}#") for t in links(readme))
    ]
    assert not unlinked, f"README.md links no docs page of: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_exists(page: Path) -> None:
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(
                f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})"
            )
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading '#{fragment}' in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)} links to what does not exist: {broken}"
