"""Drafts from the conversation (prompt lookup): several new tokens per forward pass when a reply quotes.

A reply often repeats what is already in the conversation: a translation keeps names and numbers,
a rewrite or a summary copies phrases, code repeats identifiers. When the last few generated tokens
(an n-gram) occurred earlier in the prompt or the reply, the tokens that followed them there are a
cheap guess of what comes next (`NgramIndex`). The model checks the guess in one batched forward
pass over the drafted tokens (`decode`): on a CPU a pass over k+1 tokens reads the weights once,
so it costs little more than one decode step while a model is memory-bound.

What the model outputs never changes:
- greedy: a drafted token is kept while it equals the argmax at its position under the same logits
  processing as plain decoding (repetition penalty over the same history);
- sampled: the standard rule for a deterministic draft. At each drafted position the token is sampled
  from the model's own distribution there, and the draft is kept while the sample equals it; the first
  sample that differs is the next token. That is exactly plain sampling, position by position, and
  the sampler is consulted once per emitted token in the same order, so a seed gives the same reply
  with and without drafts.

Both hold exactly when the model computes a token's logits the same in a batch as alone. Kernels
differ: on this project's CPUs float32 agreed to ~5e-5 (transformers and gguf-f32), while bfloat16
(0.4) and llama.cpp's quantized types (Q4_1: 0.8, its one-row kernel differs from its batch kernel)
did not, so a near tie could go the other way. So by default (`LLM_COMPARE_DRAFTS=auto`) a model
drafts only where the probe found its batched logits within EXACT_LOGITS of one-at-a-time ones;
`LLM_COMPARE_DRAFTS=on` drafts on the others too (faster, replies may differ at near ties), `off` never.

How many tokens to draft (`DraftLength`) follows the cost of verifying k tokens against one step and
the acceptance rate seen so far in the reply: k is drafted only where its expected tokens per second
beat plain decoding. The costs start from the probe (`verification_probe`, once per machine and model
size, cached like the other probes) and follow the passes timed in the reply itself (`PassCosts`):
the probe ran on a short context at one moment, the reply runs at its own length and load. Where no
draft length could pay even if every draft were right, drafting is off.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from llm_compare.machine import cached_probe, machine_key

NGRAM_MAX = 3  # the longest tail matched; longer tails rarely add to a 3-token match
K_MAX = 15  # most tokens drafted at once (the probe measures up to K_MAX + 1 rows)
PROBE_ROWS = (1, 2, 4, 8, 16)  # tokens per forward pass the probe times
PROBE_SECOND_ROUND_S = 1.0  # a second, interleaved round only when the first took less than this
GAIN_NEEDED = 1.05  # draft only where the expected speed beats plain decoding by this factor
PRIOR = (1.0, 2.0)  # (accepted, drafted) assumed before a reply's first verification: rate 0.5
FORGET = 0.9  # weight of earlier verifications at each new one: the rate follows the reply
RETRY_AFTER = 8  # after this many proposals skipped for a low rate, draft one token to look again
PRIOR_PASSES = 2  # the probe's cost of a pass counts as this many passes timed in the reply
TIMED_WEIGHT = 0.3  # weight of the newest timed pass in a running average (the load changes)
EXACT_LOGITS = 1e-3  # batched logits this close to one-at-a-time ones keep replies as they are
DRAFTS_ENV = "LLM_COMPARE_DRAFTS"  # auto (default: where exact) | on (also where not) | off
MODES = ("auto", "on", "off")


ALIASES = {"0": "off", "no": "off", "false": "off", "1": "on", "yes": "on", "true": "on"}


def mode() -> str:
    """The drafting mode the environment sets (an unknown value means the default, "auto")."""
    value = os.environ.get(DRAFTS_ENV, "").strip().lower()
    value = ALIASES.get(value, value)
    return value if value in MODES else "auto"


def draft_length_for(probe: dict | None) -> "DraftLength | None":
    """A fresh DraftLength for one reply on a model with this probe result, or None: no drafts
    (turned off, not exact enough for "auto", or not paying even when every draft is right)."""
    chosen = mode()
    if chosen == "off" or not probe:
        return None
    if chosen == "auto" and not probe.get("max_logit_diff", float("inf")) <= EXACT_LOGITS:
        return None
    costs = usable(probe.get("costs"))
    return DraftLength(costs) if costs else None


class NgramIndex:
    """The conversation's tokens, with the latest place each 1..NGRAM_MAX-gram occurred (and what followed).

    Updated per token in O(NGRAM_MAX); a lookup is a dictionary read, whatever the conversation's length.
    """

    def __init__(self, ids: Sequence[int], max_n: int = NGRAM_MAX):
        self.max_n = max_n
        self.ids: list[int] = []
        self.follower: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after its latest occurrence
        self.extend(ids)

    def extend(self, ids: Sequence[int]) -> None:
        for token in ids:
            self.append(token)

    def append(self, token: int) -> None:
        # the n-grams ending at the previous last token now have a follower: register them
        end = len(self.ids)
        for n in range(1, min(self.max_n, end) + 1):
            self.follower[tuple(self.ids[end - n:end])] = end
        self.ids.append(token)

    def propose(self, k: int) -> tuple[int, list[int]]:
        """(n, up to k tokens) that followed the latest earlier occurrence of the longest matching tail."""
        if k <= 0:
            return 0, []
        for n in range(min(self.max_n, len(self.ids)), 0, -1):
            at = self.follower.get(tuple(self.ids[-n:]))
            if at is not None:
                return n, self.ids[at:at + k]
        return 0, []


def interpolated(costs: dict[int, float], rows: int) -> float:
    """Seconds of a forward pass over `rows` tokens from the measured figures (linear between, beyond)."""
    points = sorted((int(r), float(s)) for r, s in costs.items())
    for (r0, s0), (r1, s1) in zip(points, points[1:]):
        if rows <= r1:
            return s0 + (s1 - s0) * (rows - r0) / (r1 - r0)
    (r0, s0), (r1, s1) = points[-2], points[-1]
    return s1 + (s1 - s0) * (rows - r1) / (r1 - r0)


def expected_tokens(rate: float, k: int) -> float:
    """Tokens one verification of k drafts yields when each is right with probability `rate` (given the
    ones before it were): the accepted drafts plus the model's own token after them."""
    return float(k + 1) if rate >= 1.0 else (1.0 - rate ** (k + 1)) / (1.0 - rate)


def best_length(costs: dict[int, float], rate: float, limit: int) -> int:
    """The draft length (0..limit) with the most expected tokens per second; 0 unless it beats one
    plain step by GAIN_NEEDED."""
    step = interpolated(costs, 1)
    best_k, best = 0, GAIN_NEEDED / step
    for k in range(1, min(limit, K_MAX) + 1):
        speed = expected_tokens(rate, k) / interpolated(costs, k + 1)
        if speed > best:
            best_k, best = k, speed
    return best_k


def usable(costs: dict | None) -> dict[int, float] | None:
    """Measured costs cleaned for use, relative to one step, or None if drafting cannot pay even when every
    drafted token is right (or nothing sensible was measured). A pass over more rows may really be
    cheaper than one over fewer (a BLAS kernel that suits 4 rows better than 2): that is kept, and the
    draft length then prefers it; but no pass counts as cheaper than one step."""
    if not costs or len(costs) < 2:
        return None
    measured = {int(r): float(s) for r, s in costs.items()}
    if 1 not in measured or not all(s > 0 for s in measured.values()):
        return None
    step = measured[1]
    clean = {rows: max(1.0, seconds / step) for rows, seconds in sorted(measured.items())}
    return clean if best_length(clean, 1.0, K_MAX) > 0 else None


class PassCosts:
    """Seconds of a pass over r tokens relative to one step: the probe's figures, corrected by the passes
    timed in this reply (a running average per row count, the probe counting as PRIOR_PASSES passes)."""

    def __init__(self, prior: dict[int, float]):
        self.prior = dict(prior)
        self.timed: dict[int, float] = {}  # rows -> running average of the seconds its passes took
        self.count: dict[int, int] = {}

    def observe(self, rows: int, seconds: float) -> None:
        if not seconds > 0:
            return
        old = self.timed.get(rows)
        self.timed[rows] = seconds if old is None else old + TIMED_WEIGHT * (seconds - old)
        self.count[rows] = self.count.get(rows, 0) + 1

    def table(self) -> dict[int, float]:
        """{rows: cost relative to one step}: where the reply timed both a step and this many rows, their
        ratio blended with the probe's; elsewhere the probe's."""
        table = dict(self.prior)
        step = self.timed.get(1)
        if step:
            for rows, seconds in self.timed.items():
                if rows > 1:
                    n = self.count[rows]
                    before = interpolated(self.prior, rows)
                    table[rows] = max(1.0, (before * PRIOR_PASSES + seconds / step * n) / (PRIOR_PASSES + n))
        return table


@dataclass
class DraftLength:
    """How many tokens to draft next, per n-gram size: from the costs and the acceptance rate so far."""

    costs: dict[int, float]  # rows -> seconds of a pass, or relative to one step (`usable`)
    accepted: dict[int, float] = field(default_factory=dict)
    drafted: dict[int, float] = field(default_factory=dict)
    skipped: dict[int, int] = field(default_factory=dict)
    passes: PassCosts = field(init=False)

    def __post_init__(self):
        step = self.costs[1]
        self.passes = PassCosts({int(r): s / step for r, s in self.costs.items()})

    def rate(self, n: int) -> float:
        """Chance that a drafted token from an n-gram match is right, given those before it were."""
        return (self.accepted.get(n, 0.0) + PRIOR[0]) / (self.drafted.get(n, 0.0) + PRIOR[1])

    def timed(self, rows: int, seconds: float) -> None:
        """A pass over `rows` new tokens in this reply took `seconds` (`decode` times each one)."""
        self.passes.observe(rows, seconds)

    def choose(self, n: int, available: int) -> int:
        if available <= 0:
            return 0
        k = best_length(self.passes.table(), self.rate(n), available)
        if k == 0:
            self.skipped[n] = self.skipped.get(n, 0) + 1
            if self.skipped[n] >= RETRY_AFTER:  # the rate may have changed: look again, cheaply
                self.skipped[n], k = 0, 1
        return k

    def record(self, n: int, k: int, accepted: int) -> None:
        """A verification of k drafted tokens from an n-gram match kept `accepted` of them. Positions after
        the first wrong one were never judged, so they do not count against the rate."""
        judged = accepted + (1 if accepted < k else 0)
        self.accepted[n] = self.accepted.get(n, 0.0) * FORGET + accepted
        self.drafted[n] = self.drafted.get(n, 0.0) * FORGET + judged


def verification_probe(backend: str, weight_bytes: int | None, seconds_for_rows: Callable[[int], float],
                       logit_difference: Callable[[], float], extra: str = "") -> dict | None:
    """{"costs": {rows: seconds of one forward pass over that many new tokens}, "max_logit_diff": largest
    difference between logits computed in one batch and one token at a time} for this backend and model
    here, measured once per machine and cached (`machine.cached_probe`); None if it cannot be measured.
    `seconds_for_rows(r)` evaluates r tokens after a short context and returns the seconds."""
    from llm_compare import cpu_probe  # reason: torch

    key = machine_key("drafts", backend, cpu_probe.size_bucket(weight_bytes), cpu_probe.torch_kernels(), extra,
                      ",".join(map(str, PROBE_ROWS)))

    def measure():
        rounds = [{str(r): seconds_for_rows(r) for r in PROBE_ROWS}]
        if sum(rounds[0].values()) < PROBE_SECOND_ROUND_S:  # interleaved rounds: fair under load; a big model: one
            rounds.append({str(r): seconds_for_rows(r) for r in PROBE_ROWS})
        costs = {r: min(one[r] for one in rounds) for r in rounds[0]}
        return {"costs": costs, "max_logit_diff": float(logit_difference())}

    try:
        found = cached_probe("drafts", key, measure)
    except Exception:  # a probe that fails (memory, a busy machine) only means no drafts
        return None
    return {"costs": {int(r): float(s) for r, s in found["costs"].items()}, "max_logit_diff": found["max_logit_diff"]}


@dataclass
class DraftStats:
    """What drafting did in one reply: the pane's and `--json`'s figures."""

    drafted: int = 0  # tokens proposed and verified
    accepted: int = 0  # of those, kept: tokens that came from drafts


def decode(evaluate: Callable[[list[int], int], Sequence], keep: Callable[[int], None],
           choose: Callable[[object, list[int]], int], prompt: list[int], max_new: int, stop_ids,
           stop, emit: Callable[[int, bool], None], length: DraftLength | None,
           clock: Callable[[], float] = time.perf_counter) -> DraftStats:
    """Generate up to `max_new` tokens after `prompt`, drafting from the conversation where `length` says so.

    `evaluate(ids, rows)` feeds ids after what the model's cache holds and returns the logits of the
    last `rows` of them; `keep(n)` cuts the cache back to its first n tokens; `choose(logits, history)`
    is the plain decoding rule (penalty, then argmax or the seeded sampler). `emit(token, drafted)` gets
    every new token in order; a stop id is emitted and ends the reply, as in plain decoding. At the
    end the cache holds the prompt and every new token but the last (as after plain decoding).
    Each pass after the prompt's is timed with `clock` for `length` (`DraftLength.timed`).
    """
    history = list(prompt)
    index = NgramIndex(history) if length is not None else None
    stats = DraftStats()
    token = choose(evaluate(history, 1)[-1], history)
    emit(token, False)
    n = 1
    while token not in stop_ids and n < max_new and not stop.is_set():
        history.append(token)
        draft, gram = [], 0
        if index is not None:
            index.append(token)
            gram, found = index.propose(min(K_MAX, max_new - n - 1))
            draft = found[:length.choose(gram, len(found))]
        started = clock()
        rows = evaluate([token, *draft], len(draft) + 1)
        if length is not None:
            length.timed(len(draft) + 1, clock() - started)
        accepted = 0
        for i in range(len(draft) + 1):
            token = choose(rows[i], history)
            n += 1
            if i == len(draft) or token != draft[i]:
                emit(token, False)
                break
            accepted += 1
            emit(token, True)
            if token in stop_ids or n >= max_new or stop.is_set():
                break
            history.append(token)
            index.append(token)
        if draft:
            length.record(gram, len(draft), accepted)
            stats.drafted += len(draft)
            stats.accepted += accepted
            if accepted < len(draft):
                keep(len(history))  # the cache held every drafted token: drop the rejected ones
    keep(len(prompt) + n - 1)  # a reply that ended inside a draft leaves drafted tokens after it
    return stats
