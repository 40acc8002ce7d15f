"""Top-p sampling's set, found among the top candidates before a full sort: the same set and
probabilities as sorting the whole row (the definition), and samples that follow them."""

from __future__ import annotations

import pytest
import torch

from llm_compare.backends.sampling import NUCLEUS_CANDIDATES, SeededSampler, nucleus


def reference(probs: torch.Tensor, top_p: float) -> dict[int, float]:
    """The smallest most-probable set reaching top_p, from a sort of the whole row."""
    ordered, ids = torch.sort(probs, descending=True)
    kept, total = {}, 0.0
    for p, i in zip(ordered.tolist(), ids.tolist()):
        if total > top_p:
            break
        kept[i] = p
        total += p
    return kept


def rows() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(5000, generator=gen) * 6
    return {"peaked": peaked, "flat": torch.randn(5000, generator=gen) * 0.1,  # a set beyond every candidate size
            "medium": torch.randn(5000, generator=gen) * 2.2, "one token": torch.full((5000,), -9.0).index_fill(0, torch.tensor([7]), 9.0)}


@pytest.mark.parametrize("name", ["peaked", "flat", "medium", "one token"])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_the_set_is_the_one_a_full_sort_gives(name, top_p):
    probs = torch.softmax(rows()[name].double(), -1)
    ids, kept = nucleus(probs, top_p)
    found = {i: p for i, p in zip(ids.tolist(), kept.tolist()) if p > 0}
    expected = reference(probs, top_p)
    assert found.keys() == expected.keys()
    assert all(found[i] == pytest.approx(expected[i], rel=1e-12) for i in found)


def test_the_candidates_cover_small_sets_and_the_fallback_large_ones():
    """The flat row's set is larger than the largest candidate count: it exercises the full sort."""
    assert len(reference(torch.softmax(rows()["flat"].double(), -1), 0.9)) > max(NUCLEUS_CANDIDATES)
    assert len(reference(torch.softmax(rows()["peaked"].double(), -1), 0.9)) < min(NUCLEUS_CANDIDATES)


def test_samples_follow_the_renormalised_set():
    """A chi-square check over 4000 seeded draws of a row whose top-0.8 set has a handful of tokens."""
    logits = torch.tensor([[4.0, 3.5, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0] + [-6.0] * 200])
    sampler = SeededSampler(temperature=1.0, top_p=0.8, seed=5)
    counts = torch.zeros(logits.shape[-1])
    for _ in range(4000):
        counts[int(sampler(None, logits.clone())[0].argmax())] += 1
    expected = reference(torch.softmax(logits[0].double(), -1), 0.8)
    total = sum(expected.values())
    assert set(torch.nonzero(counts).flatten().tolist()) <= expected.keys()
    chi2 = sum((counts[i] - 4000 * p / total) ** 2 / (4000 * p / total) for i, p in expected.items())
    assert len(expected) == 3 and chi2 < 13.8  # the 99.9 % quantile of chi-square with 2 degrees of freedom
