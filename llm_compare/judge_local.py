"""A local judge reads its verdict from next-token probabilities: one evaluation, no decoding.

The judge prompt is formatted with the model's chat template, the reply is started with "[[", and
the logits at the last position (`Backend.prompt_logits(ids, last_only=True)`, any local backend)
compare the tokens that continue "[[" into "[[A", "[[B" and "[[C". The most probable of the three
is the verdict, whatever else the model would have said.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_compare.errors import UserError
from llm_compare.judge import TextJudge, VERDICTS

PREFIX = "[["


def verdict_tokens(tokenize) -> tuple[list[int], dict[str, int]]:
    """(ids of "[[", {letter: the token that follows them in "[[<letter>"})."""
    prefix = tokenize(PREFIX)
    out = {}
    for letter in VERDICTS:
        ids = tokenize(PREFIX + letter)
        out[letter] = ids[len(prefix)] if ids[:len(prefix)] == prefix and len(ids) > len(prefix) else tokenize(letter)[0]
    if len(set(out.values())) < len(VERDICTS):
        raise UserError("this judge's tokenizer gives the verdicts A, B and C one token; it cannot judge by probabilities")
    return prefix, out


def last_position_logits(backend, ids: list[int]) -> np.ndarray:
    """The logits after `ids`: one evaluation of the prompt, only the last row kept (Backend.prompt_logits)."""
    *_, (_, logits) = backend.prompt_logits(ids, last_only=True)
    return np.asarray(logits).reshape(-1, np.shape(logits)[-1])[-1]  # llama.cpp gives [vocab], transformers [1, vocab]


@dataclass
class ProbabilityJudge:
    """A local judge whose verdict is the most probable of the verdict tokens after "[["."""

    backend: object
    name: str

    def __post_init__(self):
        self.prefix, self.tokens = verdict_tokens(self.backend.text_ids)

    def verdict(self, messages: list[dict]) -> tuple[str | None, dict]:
        ids = list(self.backend.prompt_ids(messages)) + self.prefix
        logits = last_position_logits(self.backend, ids).astype(np.float64)
        chosen = logits[[self.tokens[v] for v in VERDICTS]]
        probs = np.exp(chosen - chosen.max())
        probs /= probs.sum()
        letter = VERDICTS[int(np.argmax(probs))]
        return letter, {"probabilities": {v: round(float(p), 4) for v, p in zip(VERDICTS, probs)}}


def make_judge(backend, decode: bool = False):
    """The judge for a loaded backend: by next-token probabilities when it runs here (unless
    `decode`), else by parsing its reply (servers, and local models asked to decode)."""
    if backend.runs_here and not decode:
        return ProbabilityJudge(backend, backend.spec.name)
    return TextJudge(backend, backend.spec.name)
