"""The README and docs link only to files that are in the repository (a reader of a
checkout or of the package page can follow every link)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_point_into_the_repository(page: Path) -> None:
    broken = []
    # Code is not prose: a regular expression in backticks is no link.
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            broken.append(f"{target}: outside the repository")
            continue
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).resolve().exists():
            broken.append(f"{target}: no such file")
        elif path and not (page.parent / path).resolve().is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
    assert broken == []
