"""The leaderboard as the app shows it: a table and a ratings plot with 95% intervals.

Pure functions over `verdict.verdict` (plain and style-controlled ratings, votes still needed);
the plot is a small inline SVG (no plotting dependency), one row per model: the interval as a
bar, the rating as a dot. Model names are escaped here: they and the answers are untrusted.
"""

from __future__ import annotations

import html

from llm_compare.ratings import Leaderboard
from llm_compare.markup import md_cell
from llm_compare.verdict import HUMAN, Verdict, agreement_lines, needed_text, style_lines, verdict

HEADERS = ["Rank", "Model", "Rating", "95% CI", "Elo", "Battles", "W / T / L", "Win rate",
           "Style-controlled", "Style 95% CI", "To the next model"]


def compute(store, blind_only: bool, voters: str = HUMAN, category: str = "all",
            preset_groups: dict | None = None) -> Verdict:
    records = store.clean_battles() + store.judge_records()
    return verdict(records, voters=voters, category=category, blind_only=blind_only, preset_groups=preset_groups)


def table_rows(v: Verdict, labels: dict | None = None) -> list[list]:
    labels = labels or {}
    rows = []
    for rank, r in enumerate(v.board.rows, 1):
        name = labels.get(r.model, r.model)  # a Dataframe cell shows text as text
        styled = ([round(v.style.ratings[r.model]), "{:.0f} – {:.0f}".format(*v.style.intervals[r.model])]
                  if v.style else ["–", "–"])
        gap = needed_text(v.gaps[rank - 1]) if rank <= len(v.gaps) else ""
        rows.append([rank, name, round(r.rating), f"{r.ci_low:.0f} – {r.ci_high:.0f}", round(r.elo), r.battles,
                     f"{r.wins} / {r.ties} / {r.losses}", f"{100 * r.win_rate:.0f}%", *styled, gap])
    return rows


def summary(v: Verdict, blind_only: bool, counts: dict) -> str:
    scope = "blind votes without self-identifying answers" if blind_only else "all votes"
    who = "human votes" if v.voters == HUMAN else md_cell(v.voters)
    where = "" if v.category == "all" else f" · category {md_cell(v.category)}"
    return (f"**{v.board.battles}** rated battles ({who}, {scope}{where}) · {counts['votes']} human votes stored · "
            f"{counts['unvoted']} battles waiting for a vote")


def details(v: Verdict, labels: dict | None = None) -> str:
    """Markdown under the table: style coefficients, adjacent pairs, judge agreement (all escaped)."""
    if not v.board.rows:
        return ""
    lines = ["**Style coefficients** (rating points per standard deviation; what the style-controlled "
             "rating holds out):", *[f"- {md_cell(t)}" for t in style_lines(v.style)]]
    if v.gaps:
        lines += ["", "**Adjacent models** (votes still needed until the 95% interval of the difference excludes 0):"]
        for g in v.gaps:
            name = lambda m: md_cell(str((labels or {}).get(m, m)))
            lines.append(f"- {name(g.better)} vs {name(g.worse)}: {g.difference:+.0f} "
                         f"({g.ci_low:+.0f} to {g.ci_high:+.0f}), {g.battles} head-to-head: **{needed_text(g)}**")
    if v.agreement:
        lines += ["", *[f"- {md_cell(t)}" for t in agreement_lines(v.agreement)]]
    return "\n".join(lines)


def plot_svg(board: Leaderboard | Verdict, labels: dict | None = None, width: int = 640) -> str:
    """Ratings with their 95% intervals; an empty board says so instead."""
    board = board.board if isinstance(board, Verdict) else board
    if not board.rows:
        return "<p id='ratings-empty'>No rated battles yet: vote on a few answers first.</p>"
    labels = labels or {}
    row_h, left, right, top = 34, 230, 30, 28
    height = top + row_h * len(board.rows) + 24
    lo = min(r.ci_low for r in board.rows)
    hi = max(r.ci_high for r in board.rows)
    pad = max(10.0, (hi - lo) * 0.1)
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="ratings with 95% intervals" style="font: 13px sans-serif">']
    for tick in _ticks(lo, hi):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top - 8}" x2="{x(tick):.1f}" y2="{height - 20}" '
                     f'stroke="#ddd"/><text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" '
                     f'fill="#666">{tick:.0f}</text>')
    for i, r in enumerate(board.rows):
        y = top + row_h * i + row_h / 2
        name = html.escape(str(labels.get(r.model, r.model)))
        parts.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{name}</text>')
        parts.append(f'<line x1="{x(r.ci_low):.1f}" y1="{y:.1f}" x2="{x(r.ci_high):.1f}" y2="{y:.1f}" '
                     f'stroke="#818cf8" stroke-width="6" stroke-linecap="round"/>')
        parts.append(f'<circle cx="{x(r.rating):.1f}" cy="{y:.1f}" r="6" fill="#4338ca"/>')
        parts.append(f'<text x="{x(r.rating):.1f}" y="{y - 9:.1f}" text-anchor="middle" fill="#333">'
                     f'{r.rating:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    step = next((s for s in (5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000) if span / s <= 6), int(span / 5) or 1)
    first = int(lo // step + 1) * step
    return [float(v) for v in range(first, int(hi) + 1, step)]
