"""Style control: Bradley–Terry ratings with the pull of answer style held out (lmarena's method).

Longer answers, and answers with headers, lists and bold, win votes whatever they say. For every
battle each style feature f enters as the normalised difference (f_A - f_B) / (f_A + f_B) (0 when
both are 0), standardised over the battles; the model is
    logit P(A beats B) = theta_A - theta_B + sum_k beta_k * x_k
fitted by penalised maximum likelihood (ties count half a win each, as in `ratings`). The thetas are
the style-controlled ratings (on the Elo scale, mean 1000), the betas how much one standard
deviation of each feature moved votes (in rating points). Intervals: percentile bootstrap over
battles, as the plain board. Pure numpy; the features come from the stored answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from llm_compare.ratings import ANCHOR, BASE, PRIOR_PRECISION, SCALE, SCORE_A, percentile_interval

FEATURES = ("length", "headers", "lists", "bold")
_HEADER = re.compile(r"^#{1,6}\s+\S", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
_POINTS = SCALE / math.log(BASE)  # rating points per natural-log unit


def style_counts(text: str) -> tuple[int, int, int, int]:
    """(characters, markdown headers, list items, bold spans) of one answer."""
    text = text or ""
    return len(text), len(_HEADER.findall(text)), len(_LIST.findall(text)), len(_BOLD.findall(text))


def answers(conversation: list) -> str:
    """Every assistant turn of a conversation, joined (multi-turn battles count all of them)."""
    return "\n".join(m.get("content") or "" for m in conversation or [] if m.get("role") == "assistant")


def style_matrix(records: list[dict]) -> np.ndarray:
    """(battles, features): standardised normalised differences of each style count, A minus B."""
    if not records:
        return np.zeros((0, len(FEATURES)))
    a = np.array([style_counts(answers(r.get("conversation_a"))) for r in records], dtype=float)
    b = np.array([style_counts(answers(r.get("conversation_b"))) for r in records], dtype=float)
    total = a + b
    diff = np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)
    sd = diff.std(axis=0)
    return np.divide(diff - diff.mean(axis=0), sd, out=np.zeros_like(diff), where=sd > 0)


def fit_contextual(a: np.ndarray, b: np.ndarray, score: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Natural-log [theta (n models), beta (features)] maximising the penalised likelihood (Newton)."""
    battles, k = len(a), x.shape[1]
    design = np.zeros((battles, n + k))
    rows = np.arange(battles)
    design[rows, a] += 1.0
    design[rows, b] -= 1.0
    design[:, n:] = x
    precision = np.full(n + k, PRIOR_PRECISION)
    w = np.zeros(n + k)

    def loglik(v):
        z = design @ v
        return float(np.sum(score * -np.logaddexp(0.0, -z) + (1 - score) * -np.logaddexp(0.0, z))
                     - 0.5 * precision @ (v * v))

    current = loglik(w)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (score - p) - precision * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(precision)
        step = np.linalg.solve(hess, grad)
        size, trial = 1.0, loglik(w + step)
        while trial < current - 1e-12 and size > 1e-6:  # never let the likelihood fall
            size /= 2
            trial = loglik(w + size * step)
        w, current = w + size * step, trial
        if np.max(np.abs(size * step)) < 1e-9:
            break
    return w


@dataclass
class StyleBoard:
    """Style-controlled ratings and the fitted style coefficients, with 95% bootstrap intervals."""

    ratings: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    coefficients: dict[str, float]  # rating points per standard deviation of the feature
    coefficient_intervals: dict[str, tuple[float, float]]
    samples: np.ndarray  # (rounds, models) bootstrap ratings, for intervals of differences
    absent: tuple[str, ...] = ()  # features no battle told apart (no answer had any): coefficient 0

    def to_dict(self) -> dict:
        return {"ratings": self.ratings, "intervals": {m: list(v) for m, v in self.intervals.items()},
                "coefficients": {f: {"value": v, "ci_low": self.coefficient_intervals[f][0],
                                     "ci_high": self.coefficient_intervals[f][1]} for f, v in self.coefficients.items()}}


def _scaled(w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    ratings = _POINTS * w[:n]
    return ratings - ratings.mean() + ANCHOR, _POINTS * w[n:]


def style_board(records: list[dict], models: list[str], rounds: int = 200, seed: int = 0,
                level: float = 0.95) -> StyleBoard | None:
    """The style-controlled board of `records` (rateable ones), or None without battles."""
    if not records or not models:
        return None
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[r["model_a"]] for r in records])
    b = np.array([index[r["model_b"]] for r in records])
    score = np.array([SCORE_A[r["winner"]] for r in records], dtype=float)
    x = style_matrix(records)
    n = len(models)
    ratings, coefs = _scaled(fit_contextual(a, b, score, x, n), n)
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, n + len(FEATURES)))
    for k in range(rounds):
        pick = rng.integers(0, len(records), len(records))
        samples[k, :n], samples[k, n:] = _scaled(fit_contextual(a[pick], b[pick], score[pick], x[pick], n), n)
    low, high = percentile_interval(samples, level)
    return StyleBoard(
        ratings=dict(zip(models, ratings.tolist())),
        intervals={m: (float(low[i]), float(high[i])) for i, m in enumerate(models)},
        coefficients=dict(zip(FEATURES, coefs.tolist())),
        coefficient_intervals={f: (float(low[n + i]), float(high[n + i])) for i, f in enumerate(FEATURES)},
        samples=samples[:, :n],
        absent=tuple(f for f, seen in zip(FEATURES, x.any(axis=0)) if not seen),
    )
