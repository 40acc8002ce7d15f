"""The draft loop (`drafts.decode`) on each local backend: how it evaluates tokens and trims its cache.

`TorchForward` runs a transformers model forward with a `DynamicCache` it keeps and crops (its float32
verification passes over a few rows multiply weights-first: `few_rows_linear`);
`LlamaForward` runs llama.cpp with logits for every drafted row (`llamacpp_eval`). `measured_probe`
times either over r new tokens and compares batched with one-at-a-time logits for
`drafts.verification_probe`, which decides whether and how far drafting pays (and keeps replies)
for this model on this machine.
"""

from __future__ import annotations

import threading
from typing import Callable

from llm_compare import drafts
from llm_compare.backends.llamacpp_eval import evaluate, keep_prefix

PROBE_CONTEXT = 32  # tokens in the cache while the probe times a pass: a decode-like state
PROBE_COMPARED = 4  # tokens whose logits the probe compares, batched against one at a time
FEW_ROWS = (2, 6)  # verification passes over this many tokens multiply weights-first (`few_rows_linear`)
_verifying = threading.local()  # set while this thread runs a verification pass (TorchForward.evaluate)


def few_rows_linear(module, x):
    """nn.Linear's forward for a float32 layer, as `weight @ x.T` while verifying 2-6 drafted rows.

    MKL's sgemm behind F.linear is tuned for one row (its matrix-vector kernel) and for many: on a Zen 4
    SmolLM2's tied 49152x576 output layer took 3x longer for 2 rows than for 1, and 1536x576 layers 2x
    longer for 4, while the same product with the weight as the left operand cost about one row's
    time. Rows differ from one-at-a-time by float rounding only (~5e-5 in SmolLM2's logits, what the
    probe's batched-vs-alone comparison sees), and only during verification: plain decoding, prompt
    passes and other threads keep F.linear."""
    import torch

    rows = x.numel() // module.in_features
    if getattr(_verifying, "on", False) and FEW_ROWS[0] <= rows <= FEW_ROWS[1]:
        return torch.mm(module.weight, x.reshape(rows, -1).t()).t().reshape(*x.shape[:-1], module.out_features)
    return torch.nn.functional.linear(x, module.weight)


def use_few_rows_linear(model) -> int:
    """Give the bias-free float32 nn.Linear layers of `model` `few_rows_linear`'s forward; returns how many."""
    import torch

    class FewRowsLinear(torch.nn.Linear):
        forward = few_rows_linear

    switched = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32 and module.bias is None:
            module.__class__ = FewRowsLinear
            switched += 1
    return switched


class TorchForward:
    """A transformers causal LM as `evaluate(ids, rows)` / `keep(n)` over a cache it owns."""

    def __init__(self, model, cache=None, cached: int = 0):
        """`cache`: one that already holds the first `cached` ids of the first evaluation (prefix reuse)."""
        from transformers import DynamicCache

        self.model, self.cached = model, cached
        self.cache = cache if cache is not None else DynamicCache(config=model.config)
        if not getattr(model, "_few_rows_linear", False):
            use_few_rows_linear(model)
            model._few_rows_linear = True

    def evaluate(self, ids: list[int], rows: int):
        import torch

        ids, self.cached = ids[self.cached:], 0
        _verifying.on = rows > 1
        try:
            out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), past_key_values=self.cache,
                             use_cache=True, logits_to_keep=rows)
        finally:
            _verifying.on = False
        self.cache = out.past_key_values
        return out.logits[0, -rows:]

    def keep(self, n: int) -> None:
        extra = self.cache.get_seq_length() - n
        if extra > 0:
            self.cache.crop(-extra)  # transformers 5: a negative count removes that many from the end


class LlamaForward:
    """A llama.cpp context as `evaluate(ids, rows)` / `keep(n)`; what its cache holds is `llamacpp_eval`'s record.

    `indices`: return the rows' output indices (-rows..-1) rather than copies of their logits, for a
    chooser that reads the context itself (llama.cpp's own sampler chain on plain GGUFs)."""

    def __init__(self, llm, indices: bool = False):
        self.llm, self.indices = llm, indices
        self.seq: list[int] = []

    def evaluate(self, ids: list[int], rows: int):
        self.seq.extend(ids)  # what the cache already holds of it is kept (kv_states.prepare_llama)
        found = evaluate(self.llm, self.seq, all_rows=rows > 1)
        if self.indices:
            return list(range(-rows, 0))
        return found.logits[-rows:] if rows > 1 else [found.logits]

    def keep(self, n: int) -> None:
        del self.seq[n:]
        keep_prefix(self.llm, n)


def _floats(row):
    import torch

    return row.float() if isinstance(row, torch.Tensor) else torch.from_numpy(row).float()


def probe_tokens(vocab: int) -> tuple[list[int], list[int]]:
    """A fixed context and the tokens after it, spread over the vocabulary, for timing and comparing passes."""
    tokens = [(7 + 31 * i) % vocab for i in range(PROBE_CONTEXT + drafts.PROBE_ROWS[-1])]
    return tokens[:PROBE_CONTEXT], tokens[PROBE_CONTEXT:]


def seconds_for_rows(new_forward: Callable, vocab: int, budget_s: float = 0.3) -> Callable[[int], float]:
    """`seconds(r)`: the fastest of a few forward passes over r new tokens after PROBE_CONTEXT cached ones."""
    from llm_compare.cpu_probe import _timed  # reason: torch

    context, after = probe_tokens(vocab)

    def seconds(rows: int) -> float:
        lm = new_forward()
        lm.evaluate(context, 1)

        def step():
            lm.evaluate(after[:rows], rows)
            lm.keep(PROBE_CONTEXT)

        return _timed(step, budget_s=budget_s, max_runs=8)

    return seconds


def measured_probe(kind: str, weight_bytes: int | None, extra: str, new_forward: Callable, vocab: int) -> dict | None:
    """`drafts.verification_probe` for a model reached through `new_forward()` (a fresh TorchForward or
    LlamaForward, its cache empty); the caller runs it with the threads a lone stream gets."""
    context, after = probe_tokens(vocab)

    def difference() -> float:
        batched, alone = new_forward(), new_forward()
        batched.evaluate(context, 1)
        rows = [_floats(r) for r in batched.evaluate(after[:PROBE_COMPARED], PROBE_COMPARED)]
        alone.evaluate(context, 1)
        singles = [_floats(alone.evaluate([t], 1)[0]) for t in after[:PROBE_COMPARED]]
        return max(float((a - b).abs().max()) for a, b in zip(rows, singles))

    return drafts.verification_probe(kind, weight_bytes, seconds_for_rows(new_forward, vocab), difference, extra)


def draft_length(backend) -> drafts.DraftLength | None:
    """A fresh `DraftLength` for one reply of `backend`, or None where drafting is off, would change
    replies ("auto") or cannot pay."""
    if not backend.drafts or drafts.mode() == "off":
        return None
    return drafts.draft_length_for(backend.draft_probe())


class TokenSink:
    """`emit(token, drafted)` for `drafts.decode` into a transformers streamer, counting drafted tokens."""

    def __init__(self, streamer):
        import torch

        self.torch, self.streamer = torch, streamer
        self.tokens: list[int] = []

    def __call__(self, token: int, drafted: bool) -> None:
        self.tokens.append(token)
        self.streamer.drafted_pending += int(drafted)
        self.streamer.put(self.torch.tensor([token]))


def torch_decode(model, ids: list[int], params, stop, stop_ids, streamer, length: drafts.DraftLength,
                 cache=None, cached: int = 0):
    """A reply through `drafts.decode` on a transformers model, streamed like generate() streams it;
    `cache` holds the first `cached` prompt ids already. Returns the cache and the prompt and reply ids
    (the cache holds all but the last)."""
    import torch

    from llm_compare.backends.sampling import NextToken  # reason: transformers

    lm, sink = TorchForward(model, cache, cached), TokenSink(streamer)
    streamer.put(torch.tensor([ids]))  # generate() puts the prompt first; the streamer skips it
    drafts.decode(lm.evaluate, lm.keep, NextToken(params), ids, params.max_new_tokens, set(stop_ids), stop,
                  sink, length)
    streamer.end()
    return lm.cache, ids + sink.tokens


class EndOfGeneration:
    """A plain GGUF's stop ids: whatever llama.cpp's vocabulary calls end of generation."""

    def __init__(self, llm):
        self.vocab = llm._model.vocab

    def __contains__(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))


def llama_decode(llm, ids: list[int], sampling: dict, params, stop, put, length: drafts.DraftLength) -> None:
    """A plain GGUF's reply with drafts: tokens chosen by llama.cpp's own sampler chain, built as
    `Llama.generate` builds it from `sampling` and sampling one row at a time (it accepts what it
    samples: its penalty history and random stream advance once per emitted token, as in generate)."""
    sampler = llm._init_sampler(min_p=0.0, typical_p=1.0, repeat_penalty=params.repetition_penalty, **sampling)
    lm, eog = LlamaForward(llm, indices=True), EndOfGeneration(llm)

    def counted(token: int, drafted: bool) -> None:
        if token not in eog:  # llama.cpp's end of generation ends the reply uncounted, as in the plain loop
            put(token, drafted)

    drafts.decode(lm.evaluate, lm.keep, lambda row, _history: sampler.sample(llm._ctx, row), ids,
                  params.max_new_tokens, eog, stop, counted, length)
