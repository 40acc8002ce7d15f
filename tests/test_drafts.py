"""Prompt-lookup drafts (llm_compare/drafts.py) without a real model: the proposer, the draft length
chosen from injected cost figures, and the verification loop on a model whose maths is known exactly
(a Markov chain), so greedy identity and the sampled distribution can be checked against the truth."""

from __future__ import annotations

import threading

import pytest
import torch

from llm_compare import drafts
from llm_compare.backends.sampling import NextToken
from llm_compare.drafts import DraftLength, NgramIndex, best_length, decode, usable
from llm_compare.params import GenerationParams

CHEAP = {1: 1.0, 2: 1.02, 4: 1.05, 8: 1.1, 16: 1.2}  # a memory-bound model: k tokens cost about one step
MODERATE = {1: 1.0, 2: 1.3, 4: 1.6, 8: 2.2, 16: 3.5}  # a compute-heavier model: drafts must be right to pay
LINEAR = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 16.0}  # compute-bound: k tokens cost k steps


def test_index_proposes_what_followed_the_latest_occurrence_of_the_longest_tail():
    index = NgramIndex([5, 1, 2, 9, 7, 1, 2, 3, 4, 8, 2])
    assert index.propose(3) == (1, [3, 4, 8])  # "2" last followed at 3, 4, 8 (not at 9, the earlier one)
    index.append(3)  # tail "2 3" now matches its earlier occurrence: the longer match wins
    assert index.propose(2) == (2, [4, 8])
    assert index.propose(0) == (0, [])


def test_index_without_a_match_proposes_nothing():
    index = NgramIndex([1, 2, 3])
    assert index.propose(4) == (0, [])
    index.append(1)
    assert index.propose(4) == (1, [2, 3, 1])  # a draft may run into the tail itself (a repeating loop)


def test_cheap_verification_drafts_long_and_linear_cost_never_drafts():
    assert best_length(CHEAP, 0.9, 15) >= 8
    assert best_length(CHEAP, 0.9, 3) == 3  # never more than the proposal holds
    assert best_length(CHEAP, 0.02, 15) == 0  # wrong drafts cost more than they give
    assert best_length(LINEAR, 0.99, 15) == 0
    assert usable(LINEAR) is None and usable(None) is None and usable({1: 0.0, 2: 1.0}) is None
    assert usable({1: 2.0, 2: 1.0, 4: 2.1}) == {1: 1.0, 2: 1.0, 4: 1.05}  # relative to a step, never below it
    assert usable({1: 1.0, 2: 1.8, 4: 1.2, 8: 1.6}) == {1: 1.0, 2: 1.8, 4: 1.2, 8: 1.6}  # a kernel may suit 4 rows best


def test_a_cheaper_longer_pass_is_preferred_to_a_dearer_shorter_one():
    """A BLAS kernel that is slow at 2 rows and fast at 4: with 3 tokens available, drafting 3 beats drafting 1."""
    costs = {1: 1.0, 2: 1.8, 4: 1.2, 8: 1.6, 16: 2.5}
    assert best_length(costs, 0.6, 3) == 3
    assert best_length(costs, 0.6, 1) == 0  # only one token to draft: a 2-row pass at 1.8 steps does not pay


def test_draft_length_follows_the_acceptance_rate_and_looks_again_later():
    length = DraftLength(MODERATE)
    first = length.choose(3, 15)
    assert first > 0
    for _ in range(6):
        length.record(3, 8, 8)
    assert length.choose(3, 15) >= first  # all right: longer drafts
    for _ in range(30):
        length.record(1, 8, 0)
    skipped = [length.choose(1, 15) for _ in range(drafts.RETRY_AFTER)]
    assert skipped[:-1] == [0] * (drafts.RETRY_AFTER - 1) and skipped[-1] == 1  # one token, to see if it changed
    assert length.choose(3, 15) > 0  # the rate is per n-gram size


def test_passes_timed_in_the_reply_correct_the_probe():
    """The probe timed a 2-row pass at 1.9 steps (a busy moment); the reply's own passes say 1.1: short drafts pay."""
    length = DraftLength({1: 1.0, 2: 1.9, 4: 2.2, 8: 3.0, 16: 5.0})
    assert length.choose(1, 1) == 0  # the probe alone: one drafted token at 1.9 steps does not pay at rate 1/2
    for _ in range(6):
        length.timed(1, 0.040)
        length.timed(2, 0.044)
    assert length.passes.table()[2] == pytest.approx((1.9 * drafts.PRIOR_PASSES + 1.1 * 6) / (drafts.PRIOR_PASSES + 6))
    assert length.choose(1, 1) == 1
    assert length.passes.table()[4] == 2.2  # rows the reply has not timed keep the probe's figure


def test_passes_timed_dearer_than_the_probe_said_stop_drafting():
    length = DraftLength(CHEAP)
    assert length.choose(1, 15) > 0
    for _ in range(10):
        length.timed(1, 0.010)
        for rows in (2, 4, 8, 16):
            length.timed(rows, 0.010 * rows)  # compute-bound after all: k tokens cost k steps
    assert [length.choose(2, 15) for _ in range(drafts.RETRY_AFTER - 1)] == [0] * (drafts.RETRY_AFTER - 1)


def test_pass_costs_follow_the_newest_timings():
    passes = drafts.PassCosts({1: 1.0, 4: 2.0})
    passes.observe(4, 0.3)  # no step timed yet: the probe's figure stands
    assert passes.table()[4] == 2.0
    passes.observe(1, 0.1)
    assert passes.table()[4] == pytest.approx((2.0 * drafts.PRIOR_PASSES + 3.0) / (drafts.PRIOR_PASSES + 1))
    passes.observe(1, 0.0)  # a clock that did not move is no measurement
    assert passes.timed[1] == 0.1
    for _ in range(40):
        passes.observe(1, 0.2)
    assert passes.timed[1] == pytest.approx(0.2)  # a running average: the load of a minute ago fades


class FakeClock:
    """A clock that the model advances by its injected cost per pass: timing without wall time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class MarkovLM:
    """A model whose next-token logits depend only on the last token: exact marginals are computable.
    It keeps a 'cache' of the ids it was fed, so a loop that forgets to trim rejected drafts is caught."""

    def __init__(self, logits: torch.Tensor):
        self.logits, self.cache = logits, []

    def evaluate(self, ids, rows):
        self.cache.extend(ids)
        return [self.logits[t] for t in self.cache[-rows:]]

    def keep(self, n):
        assert n <= len(self.cache)
        del self.cache[n:]


def run(logits, params, prompt, length, max_new=12, stop_ids=(), seconds=None):
    """`seconds(rows)`: the injected cost of a pass, on a fake clock `decode` reads."""
    lm, out, flags, clock = MarkovLM(logits), [], [], FakeClock()

    def evaluate(ids, rows):
        clock.now += seconds(len(ids)) if seconds else 0.0
        return lm.evaluate(ids, rows)

    stats = decode(evaluate, lm.keep, NextToken(params), prompt, max_new, set(stop_ids), threading.Event(),
                   lambda t, d: (out.append(t), flags.append(d)), length, clock=clock)
    assert lm.cache == prompt + out[:-1]  # the cache holds exactly the conversation so far
    assert sum(flags) == stats.accepted
    return out, stats


def cycle_logits(vocab=5, peak=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, generator=gen)
    for i in range(vocab):
        logits[i, (i + 1) % vocab] += peak  # mostly 0 -> 1 -> 2 -> ...: the prompt's pattern, so drafts are right
    return logits


PROMPT = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_with_drafts_is_plain_greedy(penalty):
    params = GenerationParams(greedy=True, repetition_penalty=penalty)
    logits = cycle_logits(peak=1.5)
    plain, _ = run(logits, params, PROMPT, None, max_new=40)
    drafted, stats = run(logits, params, PROMPT, DraftLength(CHEAP), max_new=40)
    assert drafted == plain
    assert stats.accepted > 0 and len(drafted) == 40


def test_decode_learns_the_pass_costs_from_its_own_passes():
    """The probe said 2-row passes cost 1.9 steps; this model's passes cost one step whatever their length.
    Drafting with the reply's timing keeps more tokens from drafts than the probe alone would, same reply."""
    params = GenerationParams(greedy=True)
    logits = cycle_logits(peak=1.5)
    probe = {1: 1.0, 2: 1.9, 4: 3.5, 8: 7.0, 16: 14.0}
    plain, _ = run(logits, params, PROMPT, None, max_new=60)
    untimed, before = run(logits, params, PROMPT, DraftLength(probe), max_new=60)
    timed, after = run(logits, params, PROMPT, DraftLength(probe), max_new=60, seconds=lambda rows: 0.05)
    assert timed == untimed == plain
    assert after.accepted > before.accepted and after.drafted > before.drafted


def test_a_stop_token_inside_an_accepted_draft_ends_the_reply():
    params = GenerationParams(greedy=True)
    logits = cycle_logits(peak=9.0)
    plain, _ = run(logits, params, PROMPT, None, max_new=30, stop_ids=[4])
    drafted, stats = run(logits, params, PROMPT, DraftLength(CHEAP), max_new=30, stop_ids=[4])
    assert drafted == plain == [2, 3, 4]
    assert stats.accepted > 0


def test_seeded_sampling_gives_the_same_reply_with_and_without_drafts():
    logits = cycle_logits()
    accepted = rejected = 0
    for seed in range(40):
        params = GenerationParams(seed=seed, temperature=1.0, top_p=0.95, repetition_penalty=1.1)
        plain, _ = run(logits, params, PROMPT, None)
        drafted, stats = run(logits, params, PROMPT, DraftLength(CHEAP))
        assert drafted == plain, seed
        accepted, rejected = accepted + stats.accepted, rejected + stats.drafted - stats.accepted
    assert accepted > 0 and rejected > 0  # both branches of the acceptance rule ran


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of `counts` against `probs` (cells with expected >= 5)."""
    expected = probs * counts.sum()
    keep = expected >= 5
    stat = (((counts - expected) ** 2) / expected)[keep].sum()
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat.double() / 2))


def test_sampled_tokens_with_drafts_follow_the_models_distribution():
    """The token at a fixed position, over many seeds, against its exact marginal under plain sampling."""
    logits = cycle_logits(peak=2.0)
    vocab, position, seeds = logits.shape[0], 6, 3000
    trans = torch.softmax(logits.double(), dim=-1)  # temperature 1, top-p 1: sampling is softmax itself
    exact = trans[PROMPT[-1]] @ torch.linalg.matrix_power(trans, position)  # token `position` after the first
    counts, accepted = torch.zeros(vocab, dtype=torch.float64), 0
    for seed in range(seeds):
        out, stats = run(logits, GenerationParams(seed=seed, temperature=1.0, top_p=1.0), PROMPT,
                         DraftLength(CHEAP), max_new=position + 1)
        counts[out[position]] += 1
        accepted += stats.accepted
    assert accepted > seeds  # most replies took drafted tokens: the distribution below is the drafted one
    assert chi_square_p(counts, exact) > 1e-3
    assert chi_square_p(counts, torch.full((vocab,), 1.0 / vocab, dtype=torch.float64)) < 1e-6  # the test has power
