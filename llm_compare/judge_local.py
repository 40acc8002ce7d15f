"""A local judge reads its verdict from next-token probabilities: one evaluation, no decoding.

The judge prompt is formatted with the model's chat template, the reply is started with "[[", and
the logits at the last position compare the tokens that continue "[[" into "[[A", "[[B" and
"[[C". The most probable of the three is the verdict, whatever else the model would have said.
`last_position_logits` is the one place that evaluates a prompt on a local backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_compare.errors import UserError
from llm_compare.judge import VERDICTS

PREFIX = "[["


def tokenizer_of(backend):
    """text -> ids without special tokens, for the backends that run here."""
    text_side = getattr(backend, "text", None)
    tokenizer = getattr(backend, "tokenizer", None) or getattr(text_side, "tokenizer", None)
    if tokenizer is not None:
        return lambda text: list(tokenizer.encode(text, add_special_tokens=False))
    prompt = getattr(backend, "prompt", None)
    if prompt is not None and hasattr(prompt, "llm"):  # a GGUF with its own vocabulary
        return lambda text: list(prompt.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    raise UserError(f"{backend.label} runs elsewhere: a server's verdict is read from its reply, not its probabilities")


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
    """The logits after `ids` (one forward pass). Switch point for `Backend.prompt_logits` (i19) when
    every local backend has it."""
    if hasattr(backend, "prompt_logits"):
        return np.asarray(backend.prompt_logits(ids))[-1]
    if hasattr(backend, "model"):  # transformers
        import torch

        with torch.inference_mode():
            out = backend.model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
        return out.logits[0, -1].float().numpy()
    if hasattr(backend, "_acquire"):  # llama.cpp
        import threading

        from llm_compare.backends.llamacpp_exported import last_logits

        llm = backend._acquire(threading.Event())
        try:
            llm.reset()
            llm.eval(ids)
            return last_logits(llm)
        finally:
            llm.reset()
            backend._idle.put(llm)
    raise UserError(f"{backend.label} cannot give next-token probabilities here; judge by its replies instead")


@dataclass
class ProbabilityJudge:
    """A local judge whose verdict is the most probable of the verdict tokens after "[["."""

    backend: object
    name: str

    def __post_init__(self):
        self.prefix, self.tokens = verdict_tokens(tokenizer_of(self.backend))
        self.encode = (getattr(self.backend, "chat_format", None) or self.backend.prompt).encode

    def verdict(self, messages: list[dict]) -> tuple[str | None, dict]:
        ids = list(self.encode(messages)) + self.prefix
        limit = self.backend.context_length
        if limit and len(ids) > limit:
            raise UserError(f"the judge prompt is {len(ids)} tokens, more than {self.backend.label}'s context of {limit}")
        logits = last_position_logits(self.backend, ids).astype(np.float64)
        chosen = logits[[self.tokens[v] for v in VERDICTS]]
        probs = np.exp(chosen - chosen.max())
        probs /= probs.sum()
        letter = VERDICTS[int(np.argmax(probs))]
        return letter, {"probabilities": {v: round(float(p), 4) for v, p in zip(VERDICTS, probs)}}


def make_judge(backend, decode: bool = False):
    """The judge for a loaded backend: by next-token probabilities when it runs here (unless
    `decode`), else by parsing its reply (servers, and local models asked to decode)."""
    from llm_compare.judge import TextJudge

    if backend.runs_here and not decode:
        return ProbabilityJudge(backend, backend.spec.name)
    return TextJudge(backend, backend.spec.name)
