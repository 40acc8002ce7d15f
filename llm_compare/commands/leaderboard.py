"""Print the leaderboard: Bradley-Terry ratings with bootstrap intervals, Elo, battles and win rates."""

from __future__ import annotations

import json

from llm_compare.ratings import leaderboard
from llm_compare.specs import BOOTSTRAP_ROUNDS, check_rounds
from llm_compare.store import open_store


def configure(p):
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--all", action="store_true",
                   help="count every voted battle, not only blind ones whose answers did not name a model")
    p.add_argument("--rounds", type=int, default=200, help=f"bootstrap rounds for the 95%% interval ({BOOTSTRAP_ROUNDS[0]}-{BOOTSTRAP_ROUNDS[1]})")
    p.add_argument("--json", action="store_true", help="print the board as JSON")


def format_board(board, blind_only: bool) -> str:
    kind = "blind battles (self-identified answers left out)" if blind_only else "all voted battles"
    if not board.rows:
        hint = "; vote in blind mode, or pass --all to count every vote" if blind_only else ""
        return f"no votes to rate among {kind}{hint}"
    width = max(5, *(len(r.model) for r in board.rows))
    lines = [f"{'#':>2}  {'model':<{width}}  {'rating':>6}  {'95% CI':>13}  {'Elo':>6}  {'battles':>7}  {'win rate':>8}"]
    for rank, r in enumerate(board.rows, 1):
        ci = f"{r.ci_low:.0f}..{r.ci_high:.0f}"
        lines.append(f"{rank:>2}  {r.model:<{width}}  {r.rating:6.0f}  {ci:>13}  {r.elo:6.0f}  {r.battles:7d}  {r.win_rate:8.0%}")
    lines.append(f"\n{board.battles} {kind}; rating: Bradley-Terry, mean 1000; Elo: online, K=4.")
    if len(board.models) > 1:
        lines.append("\nwin rate of row against column (ties count half):")
        cell = max(6, width)
        lines.append(" " * width + "  " + "  ".join(f"{m[:cell]:>{cell}}" for m in board.models))
        for m, row in zip(board.models, board.win_rate):
            cells = ["-" if v is None else f"{v:.0%}" for v in row]
            lines.append(f"{m:<{width}}  " + "  ".join(f"{c:>{cell}}" for c in cells))
    return "\n".join(lines)


def run(args) -> int:
    check_rounds(args.rounds, "--rounds")
    with open_store(args.db, must_exist=True) as store:
        records = store.clean_battles()
    board = leaderboard(records, blind_only=not args.all, rounds=args.rounds)
    if args.json:
        print(json.dumps({"battles": board.battles, "rows": [r.to_dict() for r in board.rows],
                          "win_rate": board.matrix_dict()}, ensure_ascii=False, indent=2))
    else:
        print(format_board(board, blind_only=not args.all))
    return 0

