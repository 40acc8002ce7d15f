"""Which precision to default to: decode tok/s and first-token time of each dtype vs float32.

Same model (the embedded SmolLM2-135M), same greedy settings, medians of --runs, all in one run.
Prints the start of each reply so broken output (e.g. loops) is visible next to the speed.
"""

from __future__ import annotations

import argparse

from _common import ASK, header, median

from llm_compare.backends import open_backend
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32,bfloat16,float16,int8")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("precision: decode speed and first token vs float32")
    params = GenerationParams(max_new_tokens=args.tokens, greedy=True)
    rows = {}
    for dtype in args.dtypes.split(","):
        try:
            backend = open_backend(ModelSpec(name=dtype, source="embedded:smollm2", dtype=dtype))
        except Exception as e:  # int8 may be unavailable; say so and go on
            print(f"{dtype}: skipped ({e})")
            continue
        list(stream_reply(backend, ASK, GenerationParams(max_new_tokens=4, greedy=True)))  # warm-up
        finals = [list(stream_reply(backend, ASK, params))[-1] for _ in range(args.runs)]
        rows[dtype] = (
            median([f.metrics.tokens_per_s for f in finals]),
            median([f.metrics.ttft_s for f in finals]),
            finals[0].text,
        )
        backend.close()
        del backend
    base = rows.get("float32")
    for dtype, (rate, ttft, text) in rows.items():
        rel = f"{rate / base[0]:.2f}x decode, {ttft / base[1]:.2f}x first-token time" if base else ""
        print(f"{dtype:9s} {rate:6.1f} tok/s  ttft {ttft * 1000:6.0f} ms  {rel}")
        print(f"          reply: {text[:90]!r}")


if __name__ == "__main__":
    main()
