"""Ratings from votes: pure functions over FastChat-style battle records.

- Bradley–Terry maximum likelihood on the Elo scale: P(A beats B) = 1 / (1 + 10^((R_B - R_A)/400)),
  anchored so the mean rating of the models on the board is 1000. A tie or "both bad" counts as
  half a win for each side. A very weak Gaussian prior (sd 10 natural-log units, ~1700 points)
  keeps a model that never won finite; with a few votes per pair it moves nothing visible.
- 95% intervals: percentile bootstrap over battles (resampled with replacement), fixed seed.
- Online Elo (K=4, the Chatbot Arena setting) in vote order, beside it, for comparison.
- Battle counts and a pairwise win-rate matrix (wins + half the ties, over battles played).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCALE = 400.0
BASE = 10.0
ANCHOR = 1000.0
PRIOR_PRECISION = 0.01  # 1 / (10 nats)^2
SCORE_A = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass
class Row:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    elo: float
    battles: int
    wins: int
    ties: int
    losses: int

    @property
    def win_rate(self) -> float:
        """Wins plus half the ties, over battles."""
        return (self.wins + 0.5 * self.ties) / self.battles if self.battles else float("nan")

    def to_dict(self) -> dict:
        return {"model": self.model, "rating": self.rating, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "elo": self.elo, "battles": self.battles, "wins": self.wins, "ties": self.ties,
                "losses": self.losses, "win_rate": self.win_rate}


@dataclass
class Leaderboard:
    rows: list[Row]  # best rating first
    models: list[str]  # matrix order (same as rows)
    win_rate: list[list[float | None]]  # [i][j]: row model's score against column model; None if never met
    battles: int  # how many records were rated
    samples: np.ndarray | None = None  # (rounds, models) bootstrap ratings in `models` order

    def matrix_dict(self) -> dict[str, dict[str, float | None]]:
        return {a: {b: self.win_rate[i][j] for j, b in enumerate(self.models)} for i, a in enumerate(self.models)}


def rateable(records: list[dict], blind_only: bool = True) -> list[dict]:
    """Records that count: blind-only keeps anonymous battles whose answers did not name a model."""
    out = [r for r in records if r.get("winner") in SCORE_A and r.get("model_a") != r.get("model_b")]
    if blind_only:
        out = [r for r in out if r.get("anony") and not r.get("self_identified")]
    return out


def _encode(records: list[dict], models: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[r["model_a"]] for r in records], dtype=int)
    b = np.array([index[r["model_b"]] for r in records], dtype=int)
    score = np.array([SCORE_A[r["winner"]] for r in records], dtype=float)
    return a, b, score


def _fit(a: np.ndarray, b: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Natural-log strengths by Newton's method on the penalized Bradley–Terry log-likelihood."""
    wins = np.zeros((n, n))  # wins[i, j]: i's score against j, summed
    np.add.at(wins, (a, b), score)
    np.add.at(wins, (b, a), 1.0 - score)
    games = wins + wins.T
    theta = np.zeros(n)

    def objective(t):
        diff = t[:, None] - t[None, :]
        return float(np.sum(wins * -np.logaddexp(0.0, -diff)) - 0.5 * PRIOR_PRECISION * t @ t)

    current = objective(theta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (wins - games * p).sum(axis=1) - PRIOR_PRECISION * theta
        w = games * p * (1.0 - p)
        hess = np.diag(w.sum(axis=1) + PRIOR_PRECISION) - w  # the negative Hessian, positive definite
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-6:  # halve the step until the likelihood does not fall
            trial = objective(theta + size * step)
            if trial >= current - 1e-12:
                break
            size /= 2
        theta, current = theta + size * step, trial
        if np.max(np.abs(size * step)) < 1e-9:
            break
    return theta


def _to_scale(theta: np.ndarray) -> np.ndarray:
    ratings = SCALE / math.log(BASE) * theta
    return ratings - ratings.mean() + ANCHOR


def bradley_terry(records: list[dict], models: list[str] | None = None) -> dict[str, float]:
    """Maximum-likelihood ratings (mean 1000) for every model in `records`."""
    models = models or model_names(records)
    if not models:
        return {}
    a, b, score = _encode(records, models)
    return dict(zip(models, _to_scale(_fit(a, b, score, len(models))).tolist()))


def bootstrap_samples(records: list[dict], models: list[str], rounds: int = 200, seed: int = 0) -> np.ndarray:
    """(rounds, models) ratings refitted on battles resampled with replacement (fixed seed)."""
    if rounds < 100:
        raise ValueError("use at least 100 bootstrap rounds")
    a, b, score = _encode(records, models)
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(models)))
    for k in range(rounds):
        pick = rng.integers(0, len(records), len(records))
        samples[k] = _to_scale(_fit(a[pick], b[pick], score[pick], len(models)))
    return samples


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the central `level` percentile interval (low, high)."""
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_intervals(
    records: list[dict], models: list[str] | None = None, rounds: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each model's rating, resampling battles with replacement."""
    models = models or model_names(records)
    if not records:
        if rounds < 100:
            raise ValueError("use at least 100 bootstrap rounds")
        return {}
    low, high = percentile_interval(bootstrap_samples(records, models, rounds, seed), level)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(models, low, high)}


def online_elo(records: list[dict], k: float = 4.0, initial: float = ANCHOR) -> dict[str, float]:
    """Sequential Elo in record order: R_A += K * (S_A - E_A), R_B += K * (E_A - S_A)."""
    ratings: dict[str, float] = {}
    for r in records:
        ra = ratings.setdefault(r["model_a"], initial)
        rb = ratings.setdefault(r["model_b"], initial)
        expected_a = 1.0 / (1.0 + BASE ** ((rb - ra) / SCALE))
        change = k * (SCORE_A[r["winner"]] - expected_a)
        ratings[r["model_a"]] = ra + change
        ratings[r["model_b"]] = rb - change
    return ratings


def model_names(records: list[dict]) -> list[str]:
    return sorted({r["model_a"] for r in records} | {r["model_b"] for r in records})


def tallies(records: list[dict]) -> dict[str, dict[str, int]]:
    """Per model: battles, wins, ties (tie or both bad), losses."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        s = SCORE_A[r["winner"]]
        for model, mine in ((r["model_a"], s), (r["model_b"], 1.0 - s)):
            t = out.setdefault(model, {"battles": 0, "wins": 0, "ties": 0, "losses": 0})
            t["battles"] += 1
            t["wins" if mine == 1.0 else "losses" if mine == 0.0 else "ties"] += 1
    return out


def win_rate_matrix(records: list[dict], models: list[str]) -> list[list[float | None]]:
    """[i][j]: model i's wins plus half its ties against model j, over their battles (None if none)."""
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    score, games = np.zeros((n, n)), np.zeros((n, n))
    for r in records:
        i, j, s = index[r["model_a"]], index[r["model_b"]], SCORE_A[r["winner"]]
        score[i, j] += s
        score[j, i] += 1.0 - s
        games[i, j] += 1
        games[j, i] += 1
    return [[float(score[i, j] / games[i, j]) if games[i, j] else None for j in range(n)] for i in range(n)]


def leaderboard(records: list[dict], blind_only: bool = True, rounds: int = 200, seed: int = 0) -> Leaderboard:
    """The whole board: BT rating with 95% CI, Elo, counts, win rates; best first."""
    used = rateable(records, blind_only)
    models = model_names(used)
    ratings = bradley_terry(used, models)
    samples = bootstrap_samples(used, models, rounds, seed) if used else np.zeros((rounds, 0))
    low, high = percentile_interval(samples)
    intervals = {m: (float(low[i]), float(high[i])) for i, m in enumerate(models)}
    elo = online_elo(sorted(used, key=lambda r: r.get("tstamp") or 0.0))
    counts = tallies(used)
    rows = [
        Row(m, ratings[m], *intervals[m], elo[m], **counts[m])
        for m in sorted(models, key=lambda m: (-ratings[m], m))
    ]
    order = [row.model for row in rows]
    columns = [models.index(m) for m in order]
    return Leaderboard(rows=rows, models=order, win_rate=win_rate_matrix(used, order), battles=len(used),
                       samples=samples[:, columns])
