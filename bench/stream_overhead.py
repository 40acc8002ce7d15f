"""Engine decode tokens/s divided by plain `model.generate` on the same model and settings (goal >= 0.97).

Plain generate has no streamer, so its decode rate is measured as (N-1) / (T(N) - T(1)): the time of
a 1-token run (prefill + first token) subtracted from an N-token run. The engine's rate is its own
metric (tokens after the first over the time after the first). Both run in a worker thread with the
thread policy's count, as in the app. Runs alternate, medians of --runs.
"""

from __future__ import annotations

import argparse

import torch
from _common import ASK, header, in_worker, median, timed

from llm_compare.backends import open_backend
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import load_registry
from llm_compare.threads import threads_for_stream, use_torch_threads


def plain_generate(backend, ids, n, threads):
    """`model.generate` in a fresh worker thread with the engine's thread count, as the engine runs it."""

    def work():
        use_torch_threads(threads)
        with torch.inference_mode():
            backend.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, pad_token_id=backend.tokenizer.pad_token_id,
            )

    in_worker(work)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-bf16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    header("stream overhead: engine vs plain generate")
    spec = load_registry().models[args.model]
    backend = open_backend(spec)
    n_threads = threads_for_stream(spec, 1, backend.best_threads())  # as the engine's worker
    ids = torch.tensor([backend.chat_format.encode(ASK)])
    n = args.tokens
    # the engine must produce exactly n tokens too: no stop tokens for this measurement
    backend.chat_format.stop_token_ids, saved = (), backend.chat_format.stop_token_ids
    params = GenerationParams(max_new_tokens=n, greedy=True)
    plain_generate(backend, ids, 4, n_threads)  # warm-up
    engine_rates, plain_rates = [], []
    for _ in range(args.runs):
        final = list(stream_reply(backend, ASK, params))[-1]
        assert final.metrics.new_tokens == n, final.metrics
        engine_rates.append(final.metrics.tokens_per_s)
        _, t1 = timed(lambda: plain_generate(backend, ids, 1, n_threads))
        _, tn = timed(lambda: plain_generate(backend, ids, n, n_threads))
        plain_rates.append((n - 1) / (tn - t1))
    backend.chat_format.stop_token_ids = saved
    e, p = median(engine_rates), median(plain_rates)
    print(f"model {spec.label}, {n} greedy tokens, {args.runs} runs, {n_threads} thread(s) both ways")
    print(f"plain generate decode: {p:.1f} tok/s (median)")
    print(f"engine stream_reply decode: {e:.1f} tok/s (median)")
    print(f"ratio engine/plain: {e / p:.3f}  (goal >= 0.97)")


if __name__ == "__main__":
    main()
