"""Untrusted text (model output, names, prompts) made literal in Markdown and HTML.

Shared by the report, the architecture table, the leaderboard and the judge's verdict, which all sit above it.
"""

from __future__ import annotations

import html

MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "*": "&#42;", "_": "&#95;",
              "`": "&#96;", "[": "&#91;", "]": "&#93;", "\\": "&#92;", "#": "&#35;"}


def md_cell(text: str) -> str:
    """Model text as a literal Markdown table cell: nothing in it formats, links or breaks the table."""
    out = "".join(MD_ESCAPES.get(c, c) for c in text.strip())
    lines = [line.replace("  ", "&nbsp; ") for line in out.split("\n")]
    return "<br>".join(lines) or "&nbsp;"


def esc(text) -> str:
    """Text as literal HTML, quotes included (safe in attributes)."""
    return html.escape(str(text), quote=True)
