"""Print the leaderboard: plain and style-controlled ratings, votes still needed, per category and voter.

Bradley-Terry with bootstrap intervals, Elo and win rates, as `verdict.verdict` computes them.
"""

from __future__ import annotations

import json

from llm_compare.errors import UserError
from llm_compare.presets import load_presets
from llm_compare.specs import BOOTSTRAP_ROUNDS, check_rounds
from llm_compare.store import open_store
from llm_compare.verdict import (ALL, HUMAN, agreement_lines, gap_line, needed_text, style_lines,
                                 verdict)


def configure(p):
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--all", action="store_true",
                   help="count every voted battle, not only blind ones whose answers did not name a model")
    p.add_argument("--voters", default=HUMAN,
                   help="whose votes: human (default), judge:NAME (a judge model's verdicts), judges, or all")
    p.add_argument("--category", default=ALL,
                   help="all (default), language:Chinese|English|other, or group:NAME (a preset group or report suite)")
    p.add_argument("--rounds", type=int, default=200,
                   help=f"bootstrap rounds for the 95%% interval ({BOOTSTRAP_ROUNDS[0]}-{BOOTSTRAP_ROUNDS[1]})")
    p.add_argument("--json", action="store_true", help="print the board as JSON")


def preset_groups() -> dict[str, str]:
    """Preset text -> group, so live battles started from a preset fall in its group."""
    try:
        return {p.text.strip(): p.group for p in load_presets()}
    except UserError:
        return {}


def format_board(v, blind_only: bool) -> str:
    board = v.board
    kind = "blind battles (self-identified answers left out)" if blind_only else "all voted battles"
    scope = f"{kind}, {'human votes' if v.voters == HUMAN else v.voters}, category {v.category}"
    if not board.rows:
        hint = "; vote in blind mode, or pass --all to count every vote" if blind_only else ""
        return f"no votes to rate among {scope}{hint}"
    width = max(5, *(len(r.model) for r in board.rows))
    lines = [f"{'#':>2}  {'model':<{width}}  {'rating':>6}  {'95% CI':>11}  {'style':>6}  {'style CI':>11}  "
             f"{'Elo':>6}  {'battles':>7}  {'win rate':>8}  to the next model"]
    for rank, r in enumerate(board.rows, 1):
        ci = f"{r.ci_low:.0f}..{r.ci_high:.0f}"
        styled, style_ci = f"{v.style.ratings[r.model]:6.0f}", "{:.0f}..{:.0f}".format(*v.style.intervals[r.model])
        gap = needed_text(v.gaps[rank - 1]) if rank <= len(v.gaps) else ""
        lines.append(f"{rank:>2}  {r.model:<{width}}  {r.rating:6.0f}  {ci:>11}  {styled}  {style_ci:>11}  "
                     f"{r.elo:6.0f}  {r.battles:7d}  {r.win_rate:8.0%}  {gap}")
    lines.append(f"\n{board.battles} {scope}; rating: Bradley-Terry, mean 1000; style: the same with answer "
                 "length, headers, lists and bold held out; Elo: online, K=4.")
    lines += ["\nstyle coefficients (rating points per standard deviation):", *("  " + t for t in style_lines(v.style))]
    if v.gaps:
        lines += ["\nadjacent models (votes still needed until the 95% interval of the difference excludes 0):",
                  *("  " + gap_line(g) for g in v.gaps)]
    if v.agreement:
        lines += ["", *agreement_lines(v.agreement)]
    lines.append(f"\ncategories: {', '.join(v.categories)}")
    if len(board.models) > 1:
        lines.append("\nwin rate of row against column (ties count half):")
        cell = max(6, width)
        lines.append(" " * width + "  " + "  ".join(f"{m[:cell]:>{cell}}" for m in board.models))
        for m, row in zip(board.models, board.win_rate):
            cells = ["-" if v is None else f"{v:.0%}" for v in row]
            lines.append(f"{m:<{width}}  " + "  ".join(f"{c:>{cell}}" for c in cells))
    return "\n".join(lines)


def check_choice(voters: str, category: str, judges: list[str]) -> None:
    known = [HUMAN, "judges", ALL] + [f"judge:{j}" for j in judges]
    if voters not in known:
        raise UserError(f"--voters {voters!r} is not one of {', '.join(known)}")
    if category != ALL and category.partition(":")[0] not in ("language", "group"):
        raise UserError(f"--category {category!r}: use all, language:Chinese|English|other or group:NAME")


def run(args) -> int:
    check_rounds(args.rounds, "--rounds")
    with open_store(args.db, must_exist=True) as store:
        records = store.clean_battles() + store.judge_records()
        check_choice(args.voters, args.category, store.judges())
    v = verdict(records, voters=args.voters, category=args.category, blind_only=not args.all,
                preset_groups=preset_groups(), rounds=args.rounds)
    print(json.dumps(v.to_dict(), ensure_ascii=False, indent=2) if args.json else format_board(v, not args.all))
    return 0
