"""The README is a short front door: every docs/ page is linked from it, and every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in t]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t).resolve() for t in relative_links(REPO / "README.md")}
    pages = sorted((REPO / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = [f"{page.relative_to(REPO)} -> {target}"
              for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for target in relative_links(page) if not (page.parent / target).exists()]
    assert broken == []


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 220
