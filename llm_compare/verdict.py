"""From votes to a decision: categories, style control, votes still needed, judge agreement.

Pure functions over clean-battle records (human ones from `store.clean_battles`, judge ones from
`store.judge_records`). A `Verdict` is the plain board (`ratings.leaderboard`) of one category,
its style-controlled counterpart (`style.style_board`), and for each pair of adjacent models
whether the 95% bootstrap interval of their rating difference excludes zero ("separated") or
how many more votes between them that is expected to take.

Votes still needed: a vote's score s (1 win, 1/2 tie, 0 loss) has variance (1 - t)/4 when the
models are equal (t: tie rate); the interval of the mean score excludes 1/2 once
|p - 1/2| > z * sqrt((1 - t)/4 / n), so at an observed score rate p the pair needs
n = z^2 (1 - t) / (4 (p - 1/2)^2) votes in all, minus those it has (docs/votes.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llm_compare.arena import detect_language
from llm_compare.ratings import SCORE_A, Leaderboard, leaderboard, percentile_interval, rateable
from llm_compare.style import StyleBoard, style_board

Z95 = 1.959963984540054
LANGUAGES = ("Chinese", "English", "other")
HUMAN = "human"
ALL = "all"


def language_of(record: dict) -> str:
    """Chinese / English / other, from the stored language or else the last user turn."""
    stored = record.get("language")
    if stored not in ("Chinese", "English"):
        turns = [m.get("content") or "" for m in record.get("conversation_a") or [] if m.get("role") == "user"]
        stored = detect_language(turns[-1]) if turns and not stored else stored
    return stored if stored in ("Chinese", "English") else "other"


def group_of(record: dict, preset_groups: dict[str, str] | None = None) -> str | None:
    """The preset group a battle's prompt came from: a report's suite, or a preset's exact text."""
    qid = record.get("question_id") or ""
    if record.get("source") == "batch" and "/" in qid:
        return qid.split("/", 1)[0]
    turns = [m.get("content") or "" for m in record.get("conversation_a") or [] if m.get("role") == "user"]
    return (preset_groups or {}).get(turns[-1].strip()) if turns else None


def voter_of(record: dict) -> str:
    """"human" or "judge:<name>"."""
    judge = record.get("judge") or ""
    return judge if judge.startswith("judge:") else HUMAN


def categories(records: list[dict], preset_groups: dict[str, str] | None = None) -> list[str]:
    """Every category the records fall in: "all", "language:<L>", "group:<G>" (voters are picked apart)."""
    langs = {language_of(r) for r in records}
    groups = {g for r in records if (g := group_of(r, preset_groups))}
    return [ALL] + [f"language:{lang}" for lang in LANGUAGES if lang in langs] + [f"group:{g}" for g in sorted(groups)]


def in_category(records: list[dict], category: str, preset_groups: dict[str, str] | None = None) -> list[dict]:
    """The records of one category ("all", "language:Chinese", "group:seeds")."""
    if category in (ALL, "", None):
        return list(records)
    kind, _, value = category.partition(":")
    if kind == "language":
        return [r for r in records if language_of(r).lower() == value.lower()]
    if kind == "group":
        return [r for r in records if group_of(r, preset_groups) == value]
    raise ValueError(f"unknown category {category!r}")


def pick_voters(records: list[dict], voters: str) -> list[dict]:
    """"human", "judge:<name>", "judges" (every judge) or "all" (people and judges together)."""
    if voters == ALL:
        return list(records)
    if voters == "judges":
        return [r for r in records if voter_of(r) != HUMAN]
    return [r for r in records if voter_of(r) == voters]


def needed_votes(p: float, tie_rate: float, have: int, z: float = Z95) -> int | None:
    """Further votes at score rate p and tie rate t until the interval is expected to exclude zero.

    None when p is 1/2 (no difference seen: no number of votes is expected to separate them)."""
    gap = abs(p - 0.5)
    if gap < 1e-12:
        return None
    total = z * z * max(1.0 - tie_rate, 0.0) / (4.0 * gap * gap)
    return max(math.ceil(total) - have, 1)


@dataclass
class PairGap:
    """Two models adjacent in the ranking and how far apart the votes put them."""

    better: str
    worse: str
    difference: float  # rating points, better minus worse
    ci_low: float
    ci_high: float
    battles: int  # head-to-head battles between the two
    separated: bool
    needed: int | None  # 0 when separated; None when no difference is seen

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _head_to_head(records: list[dict], x: str, y: str) -> tuple[int, float, float]:
    """(battles, x's score rate, tie rate) over the battles between x and y."""
    scores = [SCORE_A[r["winner"]] if r["model_a"] == x else 1 - SCORE_A[r["winner"]]
              for r in records if {r["model_a"], r["model_b"]} == {x, y}]
    if not scores:
        return 0, float("nan"), float("nan")
    return len(scores), float(np.mean(scores)), sum(1 for s in scores if s == 0.5) / len(scores)


def pair_gaps(board: Leaderboard, records: list[dict], level: float = 0.95) -> list[PairGap]:
    """For each pair adjacent in `board`'s order: the difference's interval and votes still needed."""
    gaps = []
    overall_ties = (sum(1 for r in records if SCORE_A[r["winner"]] == 0.5) / len(records)) if records else 0.0
    for i in range(len(board.rows) - 1):
        top, next_ = board.rows[i], board.rows[i + 1]
        diff = board.samples[:, i] - board.samples[:, i + 1]
        low, high = (float(v[0]) for v in percentile_interval(diff[:, None], level))
        separated = low > 0 or high < 0
        n, p, ties = _head_to_head(records, top.model, next_.model)
        if not n:  # never met: the rating difference predicts the score rate
            p, ties = 1.0 / (1.0 + 10 ** (-(top.rating - next_.rating) / 400)), overall_ties
        needed = 0 if separated else needed_votes(p, ties, n)
        gaps.append(PairGap(top.model, next_.model, top.rating - next_.rating, low, high, n, separated, needed))
    return gaps


def agreement(human: list[dict], judged: list[dict]) -> dict[str, dict]:
    """Per judge: on battles with a human vote too, how often its verdict is the human's (ties as one)."""
    outcome = {r["battle_id"]: SCORE_A[r["winner"]] for r in human}
    out: dict[str, dict] = {}
    for r in judged:
        if r["battle_id"] in outcome:
            tally = out.setdefault(r["judge"][len("judge:"):], {"battles": 0, "agree": 0})
            tally["battles"] += 1
            tally["agree"] += int(SCORE_A[r["winner"]] == outcome[r["battle_id"]])
    for tally in out.values():
        tally["rate"] = tally["agree"] / tally["battles"]
    return out


@dataclass
class Verdict:
    board: Leaderboard
    style: StyleBoard | None
    gaps: list[PairGap]
    voters: str
    category: str
    agreement: dict = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        rows = []
        for r in self.board.rows:
            row = r.to_dict()
            if self.style:
                row.update(style_rating=self.style.ratings[r.model], style_ci_low=self.style.intervals[r.model][0],
                           style_ci_high=self.style.intervals[r.model][1])
            rows.append(row)
        return {"voters": self.voters, "category": self.category, "categories": self.categories,
                "battles": self.board.battles, "rows": rows, "win_rate": self.board.matrix_dict(),
                "style": self.style.to_dict() if self.style else None,
                "adjacent": [g.to_dict() for g in self.gaps], "judge_agreement": self.agreement}


def verdict(records: list[dict], *, voters: str = HUMAN, category: str = ALL, blind_only: bool = True,
            preset_groups: dict[str, str] | None = None, rounds: int = 200, seed: int = 0) -> Verdict:
    """The board of one voter kind and category, with style control, adjacent gaps and agreement.

    `records`: human and judge records together. Judge verdicts are blind by construction (a judge
    reads answers, not names), so blind_only drops only self-identified answers for them."""
    chosen = [r if voter_of(r) == HUMAN else dict(r, anony=True)
              for r in in_category(pick_voters(records, voters), category, preset_groups)]
    board = leaderboard(chosen, blind_only=blind_only, rounds=rounds, seed=seed)
    used = rateable(chosen, blind_only)
    return Verdict(
        board=board,
        style=style_board(used, board.models, rounds=rounds, seed=seed),
        gaps=pair_gaps(board, used),
        voters=voters,
        category=category,
        agreement=agreement(pick_voters(records, HUMAN), pick_voters(records, "judges")),
        categories=categories(pick_voters(records, voters), preset_groups),
    )


def needed_text(gap: PairGap) -> str:
    """"separated", "≈N more votes" or "no difference seen" (for tables)."""
    if gap.separated:
        return "separated"
    return "no difference seen" if gap.needed is None else f"≈{gap.needed} more votes"


def gap_line(gap: PairGap) -> str:
    """One adjacent pair in words: difference, its interval, head-to-head battles, votes still needed."""
    return (f"{gap.better} vs {gap.worse}: {gap.difference:+.0f} (95% {gap.ci_low:+.0f} to {gap.ci_high:+.0f}), "
            f"{gap.battles} head-to-head battles: {needed_text(gap)}")


def style_lines(style: StyleBoard | None) -> list[str]:
    """The fitted style coefficients: rating points per standard deviation of each feature."""
    if style is None:
        return []
    return [f"{name}: no answer differs in it" if name in style.absent else
            f"{name}: {value:+.0f} (95% {style.coefficient_intervals[name][0]:+.0f} to "
            f"{style.coefficient_intervals[name][1]:+.0f})" for name, value in style.coefficients.items()]


def agreement_lines(agree: dict) -> list[str]:
    return [f"judge {name}: agrees with the human vote on {t['agree']} of {t['battles']} battles ({t['rate']:.0%})"
            for name, t in agree.items()]
