"""Thread settings on this machine: what the CPU probe chose, against whole-stream measurements.

For each backend (embedded SmolLM2): the thread count the probe (cpu_probe.best_threads) gives a
lone stream and what the engine gives each of two streams at once, then decode tok/s of one stream
with 1 and with all cores, and of two concurrent streams with 1 thread each and with all cores each
(oversubscribed), as ratios to the one-thread single stream, in one run. `threads` overrides the
policy via ModelSpec.threads.
"""

from __future__ import annotations

import argparse

from _common import ASK, header, median

from llm_compare.engine import Job, stream_pair, stream_reply
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import load_registry
from llm_compare import cpu_probe
from llm_compare.threads import cpu_cores, threads_for_stream


def one(backend, params):
    return list(stream_reply(backend, ASK, params))[-1].metrics.tokens_per_s


def two(b1, b2, params):
    final = list(stream_pair(Job("a", b1, ASK), Job("b", b2, ASK), params))[-1]
    ra, rb = final.a.metrics.tokens_per_s, final.b.metrics.tokens_per_s
    return ra + rb, min(ra, rb) / max(ra, rb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-bf16,smollm2-llamacpp")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("threads: one stream and two streams")
    reg, pool, cores = load_registry(), ModelPool(), cpu_cores()
    params = GenerationParams(max_new_tokens=args.tokens, greedy=True)
    for name in args.models.split(","):
        spec = reg.models[name]
        probed = pool.get(spec)
        best = probed.best_threads()
        print(f"\n{spec.label}: the probe gives a lone stream {best} thread(s), each of two streams at once "
              f"{threads_for_stream(spec, 2, best)}")
        rows = {}
        for t in sorted({1, cores}):
            b1 = pool.get(spec.with_overrides(threads=t))
            b2 = pool.get(spec.with_overrides(threads=t, name=spec.name + "#2"))
            for b in (b1, b2):
                if hasattr(b, "chat_format"):  # transformers: exactly --tokens tokens (llama.cpp may end earlier)
                    b.chat_format.stop_token_ids = ()
            one(b1, GenerationParams(max_new_tokens=4, greedy=True))  # warm-up
            rows[f"1 stream, {t} thread(s)"] = (median([one(b1, params) for _ in range(args.runs)]), None)
            pairs = [two(b1, b2, params) for _ in range(args.runs)]
            rows[f"2 streams, {t} thread(s) each"] = (median([p[0] for p in pairs]), median([p[1] for p in pairs]))
        base = rows["1 stream, 1 thread(s)"][0]
        chosen = f"1 stream, {best} thread(s)"
        print(f"\n{spec.label} ({cores} cores, {args.tokens} greedy tokens, medians of {args.runs})")
        for label, (rate, even) in rows.items():
            extra = f", evenness {even:.2f}" if even is not None else ""
            mark = "  <- the probe's choice" if label == chosen else ""
            print(f"  {label:26s} {rate:6.1f} tok/s aggregate  {rate / base:.2f}x{extra}{mark}")
    print("\nthe probe's measurements (seconds per decoded token, fastest of interleaved runs):")
    for line in cpu_probe.threads_lines():
        print(f"  {line}")


if __name__ == "__main__":
    main()
