"""How the next token is chosen from logits, the same on every local backend: the seeded sampler
transformers' generate() uses, and `NextToken`, which applies it (after the repetition penalty) to
one row of logits from llama.cpp or a draft check."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, RepetitionPenaltyLogitsProcessor

from llm_compare.params import GenerationParams


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
        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = (sorted_p.cumsum(-1) - sorted_p) > self.top_p  # keep the smallest set reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        choice = torch.multinomial(probs, 1, generator=self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, choice, 0.0)


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
        ids = torch.tensor([history], dtype=torch.long)
        if self.penalty is not None:
            scores = self.penalty(ids, scores)
        if self.sampler is not None:
            scores = self.sampler(ids, scores)
        return int(scores[0].argmax())
