"""Memory read bandwidth, and each backend's decode speed as a fraction of the limit it implies.

Decoding one token reads every weight once, so tokens/s can never exceed
bandwidth / weight bytes. The bandwidth is measured by summing a large array (bigger than any
cache) with numpy (one thread) and torch (one thread and all threads); the decode speeds are
measured here too, in the same run, as engine tok/s over --tokens greedy tokens (medians).

    python bench/memory_bandwidth.py --runs 3 --tokens 128
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import header, median

from llm_compare.architecture.bandwidth import read_bandwidth, torch_sum_bandwidth
from llm_compare.backends.llamacpp import LlamaCppBackend
from llm_compare.backends.transformers import TransformersBackend
from llm_compare.engine import stream_reply
from llm_compare.loading import load_model
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec
from llm_compare.threads import cpu_cores

STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


def bandwidths(mib: int, runs: int) -> dict[str, float]:
    n = mib * 1024 * 1024 // 4
    a = np.ones(n, dtype=np.float32)
    out = {"numpy sum, 1 thread": read_bandwidth(a.sum, a.nbytes, runs)}
    for threads in sorted({1, cpu_cores()}):
        out[f"torch sum, {threads} thread(s)"] = torch_sum_bandwidth(mib, runs, threads)  # in a worker thread
    return out


def decode_tps(backend, n: int, runs: int) -> float:
    params = GenerationParams(max_new_tokens=n, greedy=True)
    list(stream_reply(backend, STORY, params.replace(max_new_tokens=8)))  # warm-up
    return median([list(stream_reply(backend, STORY, params))[-1].metrics.tokens_per_s for _ in range(runs)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024, help="array size (default 1 GiB, far beyond any cache)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("memory read bandwidth and the decode ceiling it implies")
    bw = bandwidths(args.mib, max(5, args.runs))
    for name, value in bw.items():
        print(f"{name:24s} {value / 1e9:6.1f} GB/s")
    best = max(bw.values())
    print(f"\n{'backend':20s} {'weights MB':>10s} {'ceiling tok/s':>14s} {'decode tok/s':>13s} {'of ceiling':>11s}")
    specs = [
        ("transformers fp32", ModelSpec(name="fp32", source="embedded:smollm2", dtype="float32")),
        ("transformers bf16", ModelSpec(name="bf16", source="embedded:smollm2", dtype="bfloat16")),
        ("llama.cpp Q4_1", ModelSpec(name="llamacpp", source="embedded:smollm2", backend="llamacpp")),
    ]
    for name, spec in specs:
        backend = LlamaCppBackend(spec) if spec.backend == "llamacpp" else TransformersBackend(spec, load_model(spec))
        weight_bytes = backend.weight_bytes
        ceiling = best / weight_bytes
        tps = decode_tps(backend, args.tokens, args.runs)
        print(f"{name:20s} {weight_bytes / 1e6:10.0f} {ceiling:14.0f} {tps:13.1f} {tps / ceiling:10.0%}")
        backend.close()
        del backend


if __name__ == "__main__":
    main()
