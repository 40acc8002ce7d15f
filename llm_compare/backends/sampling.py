"""How the next token is chosen from logits, the same on every local backend: the seeded sampler
transformers' generate() uses, and `NextToken`, which applies it (after the repetition penalty) to
one row of logits from llama.cpp or a draft check."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from llm_compare.params import GenerationParams


NUCLEUS_CANDIDATES = (64, 1024)  # top-k sizes tried for the top-p set before a sort of the whole vocabulary


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, their probabilities, zero outside) of top-p sampling's set for one row: the most probable
    tokens whose probabilities reach `top_p` (the smallest such set, as transformers' TopPLogitsWarper).

    The set is usually a few tokens: it is looked for among the top 64 (then 1024) before the whole
    vocabulary is sorted. A full sort of a 49152-token row took 3.2 ms and sampling from all of it
    1 ms, against 0.1 ms here: 10 % of a SmolLM2 decode step, paid again for every drafted position."""
    for k in (c for c in NUCLEUS_CANDIDATES if c < probs.shape[-1]):
        top, ids = torch.topk(probs, k)
        cumulative = top.cumsum(-1)
        if float(cumulative[-1]) > top_p:  # every token beyond the k is dropped
            return ids, top.masked_fill(cumulative - top > top_p, 0.0)
    top, ids = torch.sort(probs, descending=True)
    return ids, top.masked_fill(top.cumsum(-1) - top > top_p, 0.0)


class SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling from a private generator; leaves a one-hot for greedy search."""

    def __init__(self, temperature: float, top_p: float, seed: int | None):
        self.temperature, self.top_p = temperature, top_p
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        for row, logits in enumerate(scores.float()):
            probs = torch.softmax(logits / self.temperature, dim=-1)
            if self.top_p < 1.0:
                ids, kept = nucleus(probs, self.top_p)
                choice = ids[torch.multinomial(kept, 1, generator=self.generator)]
            else:
                choice = torch.multinomial(probs, 1, generator=self.generator)
            out[row, choice] = 0.0
        return out


class NextToken:
    """The transformers path's choice of the next token, applied to llama.cpp's logits: the
    repetition penalty over prompt + reply, then argmax (greedy) or the seeded sampler."""

    def __init__(self, params: GenerationParams):
        penalty = params.repetition_penalty
        self.penalty = RepetitionPenaltyLogitsProcessor(penalty) if penalty and penalty != 1.0 else None
        self.sampler = None if params.greedy else SeededSampler(params.temperature, params.top_p, params.seed)

    def __call__(self, logits, history: list[int]) -> int:
        """The next token from one row of logits (numpy from llama.cpp, or a torch row from transformers)."""
        scores = (logits.float() if isinstance(logits, torch.Tensor) else torch.from_numpy(logits))[None]
        if self.penalty is not None:
            scores = self.penalty(torch.tensor([history], dtype=torch.long), scores)
        if self.sampler is not None:
            scores = self.sampler(None, scores)  # the sampler reads no ids
        return int(scores[0].argmax())
