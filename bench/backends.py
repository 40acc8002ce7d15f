"""Decode speed of every local backend on the embedded GGUF, as ratios to llama.cpp, in one run.

Backends: transformers fp32, bf16 and int8 (weight-only, loading/memory.py), llama.cpp Q4_1.

For each backend: the raw call's decode tokens/s (transformers `generate` without a streamer,
measured as (N-1) / (T(N) - T(1)); llama.cpp's own token loop, first to last token), the engine's
(`stream_reply` metrics), and engine / raw (the cost of streaming, goal >= 0.95). Runs alternate
between backends; medians of --runs. `--experiments` adds transformers bf16 variants (eager
attention, static KV cache, torch.compile) measured the same raw way.

    python bench/backends.py --runs 3 --tokens 128 [--experiments]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import header, in_worker, median

from llm_compare.backends.llamacpp import LlamaCppBackend
from llm_compare.backends.transformers import MatvecLinear, TransformersBackend
from llm_compare.engine import stream_reply
from llm_compare.loading import load_model
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec
from llm_compare.threads import threads_for_stream, use_torch_threads

STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


def transformers_backend(dtype: str) -> TransformersBackend:
    spec = ModelSpec(name=f"smollm2-{dtype}", source="embedded:smollm2", dtype=dtype)
    return TransformersBackend(spec, load_model(spec))


def raw_generate(model, ids, n: int, **kwargs) -> None:
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                   do_sample=False, pad_token_id=0, **kwargs)


def raw_transformers_tps(backend, n: int, **kwargs) -> float:
    """Decode tok/s of plain generate: (n-1) / (T(n) - T(1)), in a worker thread with the engine's thread count."""

    def measure():
        use_torch_threads(threads_for_stream(backend.spec, 1, backend.best_threads()))
        ids = torch.tensor([backend.chat_format.encode(STORY)])
        with torch.inference_mode():
            t0 = time.perf_counter()
            raw_generate(backend.model, ids, 1, **kwargs)
            t1 = time.perf_counter()
            raw_generate(backend.model, ids, n, **kwargs)
            t2 = time.perf_counter()
        return (n - 1) / ((t2 - t1) - (t1 - t0))

    return in_worker(measure)


def raw_llamacpp_tps(backend: LlamaCppBackend, n: int) -> float:
    """Decode tok/s of llama.cpp's own token loop (end-of-turn ignored), first token to last."""
    import llama_cpp

    llm = backend._idle.get()
    try:
        threads = threads_for_stream(backend.spec, 1, backend.best_threads())
        llama_cpp.llama_set_n_threads(llm._ctx.ctx, threads, threads)
        ids = backend.prompt.encode(STORY)
        llm.reset()  # no prompt cache from the previous run (the backend resets too)
        times = []
        for _ in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
            times.append(time.perf_counter())
            if len(times) >= n:
                break
        return (len(times) - 1) / (times[-1] - times[0])
    finally:
        backend._idle.put(llm)


def engine_tps(backend, n: int) -> tuple[float, float, int]:
    final = list(stream_reply(backend, STORY, GenerationParams(max_new_tokens=n, greedy=True)))[-1]
    return final.metrics.tokens_per_s, final.metrics.ttft_s, final.metrics.new_tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--experiments", action="store_true", help="also time transformers bf16 variants")
    args = ap.parse_args()
    header(f"backends on the embedded GGUF: {args.tokens} greedy tokens, medians of {args.runs}")
    n = args.tokens
    openers = {  # opened one after the other: a llama.cpp context changes torch's threading (threads.py)
        "transformers fp32": lambda: transformers_backend("float32"),
        "transformers bf16": lambda: transformers_backend("bfloat16"),
        "transformers int8": lambda: transformers_backend("int8"),
        "llama.cpp Q4_1": lambda: LlamaCppBackend(
            ModelSpec(name="smollm2-llamacpp", source="embedded:smollm2", backend="llamacpp")),
    }
    backends = {}
    raw = {name: [] for name in openers}
    eng = {name: [] for name in openers}
    ttft = {name: [] for name in openers}
    counts = {name: [] for name in openers}
    # One backend after the other, llama.cpp last, so each runs with its best thread setting.
    for name, opener in openers.items():
        b = backends[name] = opener()
        engine_tps(b, 8)  # warm-up: first calls allocate and page in weights
        for _ in range(args.runs):
            raw[name].append(raw_llamacpp_tps(b, n) if isinstance(b, LlamaCppBackend) else raw_transformers_tps(b, n))
            tps, first, count = engine_tps(b, n)
            eng[name].append(tps)
            ttft[name].append(first)
            counts[name].append(count)
    ref = median(eng["llama.cpp Q4_1"])
    print(f"{'backend':20s} {'raw tok/s':>10s} {'engine tok/s':>13s} {'engine/raw':>11s} {'vs llama.cpp':>13s} {'ttft s':>7s} {'tokens':>7s}")
    for name in backends:
        r, e = median(raw[name]), median(eng[name])
        print(f"{name:20s} {r:10.1f} {e:13.1f} {e / r:11.2f} {e / ref:12.2f}x {median(ttft[name]):7.3f} {min(counts[name]):7d}")
    if args.experiments:
        experiments(backends["transformers bf16"], n, args.runs)


def experiments(backend, n: int, runs: int) -> None:
    """Raw generate variants on bf16, as ratios to the backend as shipped (sdpa, dynamic cache, MatvecLinear)."""
    model = backend.model
    switched = [m for m in model.modules() if isinstance(m, MatvecLinear)]

    def linear_class(cls):
        for m in switched:
            m.__class__ = cls

    variants = {  # name: (generate kwargs, setup, teardown)
        "shipped (sdpa, matvec decode)": ({}, None, None),
        "plain nn.Linear": ({}, lambda: linear_class(torch.nn.Linear), lambda: linear_class(MatvecLinear)),
        "eager attention": ({}, lambda: model.set_attn_implementation("eager"), lambda: model.set_attn_implementation("sdpa")),
        "static cache": ({"cache_implementation": "static"}, None, None),
    }
    results = {name: [] for name in variants}
    for _ in range(runs):
        for name, (kwargs, setup, teardown) in variants.items():
            if setup:
                setup()
            try:
                results[name].append(raw_transformers_tps(backend, n, **kwargs))
            finally:
                if teardown:
                    teardown()
    base = median(results["shipped (sdpa, matvec decode)"])
    print("\n# transformers bf16 raw generate variants (ratio to shipped)")
    for name, xs in results.items():
        print(f"{name:34s} {median(xs):8.1f} tok/s {median(xs) / base:6.2f}x")
    t0 = time.perf_counter()
    model.forward = torch.compile(model.forward, dynamic=False)
    try:
        raw_transformers_tps(backend, 8, cache_implementation="static")  # compiles
        compile_s = time.perf_counter() - t0
        xs = [raw_transformers_tps(backend, n, cache_implementation="static") for _ in range(runs)]
        print(f"{'static cache + torch.compile':34s} {median(xs):8.1f} tok/s {median(xs) / base:6.2f}x  (compile {compile_s:.0f} s)")
    except Exception as e:  # compile needs a C++ toolchain; report, don't fail the bench
        print(f"static cache + torch.compile: failed ({type(e).__name__}: {str(e)[:120]})")
    finally:
        del model.forward  # back to the class's forward


if __name__ == "__main__":
    main()
