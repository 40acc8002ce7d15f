"""The draft loop (`drafts.decode`) on each local backend: how it evaluates tokens and trims its cache.

`TorchForward` runs a transformers model forward with a `DynamicCache` it keeps and crops;
`LlamaForward` runs llama.cpp with logits for every drafted row (`llamacpp_eval`). Each also times a
forward pass over r new tokens for `drafts.verification_costs`, the probe that decides whether and
how far drafting pays for this model size on this machine.
"""

from __future__ import annotations

from llm_compare import drafts

PROBE_CONTEXT = 32  # tokens in the cache while the probe times a pass: a decode-like state


class TorchForward:
    """A transformers causal LM as `evaluate(ids, rows)` / `keep(n)` over a cache it owns."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)

    def evaluate(self, ids: list[int], rows: int):
        import torch

        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), past_key_values=self.cache,
                         use_cache=True, logits_to_keep=rows)
        self.cache = out.past_key_values
        return out.logits[0, -rows:]

    def keep(self, n: int) -> None:
        extra = self.cache.get_seq_length() - n
        if extra > 0:
            self.cache.crop(-extra)  # transformers 5: a negative count removes that many from the end


def torch_seconds_for_rows(model, token: int):
    """`seconds_for_rows(r)` for the probe: one forward pass over r new tokens after PROBE_CONTEXT."""
    import torch

    from llm_compare.cpu_probe import _timed

    def seconds(rows: int) -> float:
        with torch.inference_mode():
            lm = TorchForward(model)
            lm.evaluate([token] * PROBE_CONTEXT, 1)

            def step():
                lm.evaluate([token] * rows, rows)
                lm.keep(PROBE_CONTEXT)

            return _timed(step, budget_s=0.3, max_runs=8)

    return seconds


def draft_length(backend) -> drafts.DraftLength | None:
    """A fresh `DraftLength` for one reply of `backend`, or None where drafting is off or cannot pay."""
    if not (backend.drafts and drafts.enabled_by_env()):
        return None
    costs = drafts.usable(backend.draft_costs())
    return drafts.DraftLength(costs) if costs else None


class TokenSink:
    """`emit(token, drafted)` for `drafts.decode` into a transformers streamer, counting drafted tokens."""

    def __init__(self, streamer):
        import torch

        self.torch, self.streamer = torch, streamer

    def __call__(self, token: int, drafted: bool) -> None:
        self.streamer.drafted_pending += int(drafted)
        self.streamer.put(self.torch.tensor([token]))


def torch_decode(model, ids: list[int], params, stop, stop_ids, streamer, length: drafts.DraftLength) -> None:
    """A reply through `drafts.decode` on a transformers model, streamed like generate() streams it."""
    import torch

    from llm_compare.backends.llamacpp_exported import NextToken

    lm = TorchForward(model)
    streamer.put(torch.tensor([ids]))  # generate() puts the prompt first; the streamer skips it
    drafts.decode(lm.evaluate, lm.keep, NextToken(params), ids, params.max_new_tokens, set(stop_ids), stop,
                  TokenSink(streamer), length)
    streamer.end()
