"""Two streams at once vs one after the other, through the engine's stream_pair, with the shipped
thread policy (llm_compare/threads.py; bench/threads.py compares other settings).

Prints aggregate tokens/s of the concurrent run divided by the sequential run (goal >= 1.0) and the
slower/faster per-stream decode ratio of the concurrent run (goal >= 0.8), in one run.
"""

from __future__ import annotations

import argparse

from _common import ASK, header, median

from llm_compare.engine import Job, stream_pair
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import load_registry
from llm_compare.threads import cpu_cores


def run(backends, params, sequential):
    final = list(stream_pair(Job("a", backends[0], ASK), Job("b", backends[1], ASK), params, sequential=sequential))[-1]
    a, b = final.a.metrics, final.b.metrics
    start = min(final.a.started_at, final.b.started_at)
    end = max(final.a.started_at + a.elapsed_s, final.b.started_at + b.elapsed_s)
    return (a.new_tokens + b.new_tokens) / (end - start), a.tokens_per_s, b.tokens_per_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-a", default="smollm2-bf16")
    ap.add_argument("--model-b", default="smollm2-bf16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("two streams: concurrent vs sequential")
    reg = load_registry()
    pool = ModelPool()
    spec_a = reg.models[args.model_a]
    spec_b = reg.models[args.model_b]
    if spec_a == spec_b:  # two instances, as two panes of the same config would be in a real comparison
        spec_b = spec_b.with_overrides(name=spec_b.name + "#2")
    backends = [pool.get(spec_a), pool.get(spec_b)]
    for b in backends:
        b.chat_format.stop_token_ids = ()  # both produce exactly --tokens tokens
    params = GenerationParams(max_new_tokens=args.tokens, greedy=True)
    run(backends, GenerationParams(max_new_tokens=8, greedy=True), True)  # warm-up
    print(f"models {spec_a.label} + {spec_b.label}; {args.tokens} greedy tokens each; {args.runs} runs; "
          f"{cpu_cores()} cores; thread policy as shipped")
    seq, conc, even = [], [], []
    for _ in range(args.runs):
        seq.append(run(backends, params, True)[0])
        agg, ra, rb = run(backends, params, False)
        conc.append(agg)
        even.append(min(ra, rb) / max(ra, rb))
    print(f"sequential aggregate {median(seq):.1f} tok/s, concurrent aggregate {median(conc):.1f} tok/s")
    print(f"ratio concurrent/sequential: {median(conc) / median(seq):.2f} (goal >= 1.0); "
          f"evenness slower/faster: {median(even):.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
