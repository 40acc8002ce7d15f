"""What reading a local judge's verdict from next-token probabilities saves over decoding it.

The embedded SmolLM2-135M judges one battle (both orders) twice each way, interleaved, best of N:
by probabilities (one prompt evaluation, `judge_local.ProbabilityJudge`) and by decoding its reply
(`judge.TextJudge`, greedy, up to --max-new-tokens). Prints the seconds and their ratio, measured
in one run, with the CPU model and load. Run it alone:
    flock /work/wt/bench.lock nice -n 0 python bench/judge.py [--backend llamacpp] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os

from _common import header, in_worker, timed

from llm_compare.backends import open_backend
from llm_compare.judge import TextJudge, judge_messages
from llm_compare.judge_local import ProbabilityJudge
from llm_compare.specs import ModelSpec

QUESTION = "Why is the sky blue? Answer in two sentences."
ANSWERS = ("Sunlight scatters off air molecules, and blue light scatters most because its wavelength is short. "
           "So the sky looks blue from every direction.",
           "The sky reflects the ocean, which is blue. At sunset it turns red because the ocean cools down.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("transformers", "llamacpp"), default="transformers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    header(f"judge verdict: next-token probabilities vs decoding ({args.backend}, SmolLM2-135M)")
    print(f"# load average {os.getloadavg()[0]:.2f}")
    backend = open_backend(ModelSpec(name="smol", source="embedded:smollm2", backend=args.backend,
                                     dtype="float32" if args.backend == "transformers" else "auto"))
    by_probs = ProbabilityJudge(backend, "smol")
    by_text = TextJudge(backend, "smol", max_new_tokens=args.max_new_tokens)
    orders = [judge_messages(QUESTION, *ANSWERS), judge_messages(QUESTION, *reversed(ANSWERS))]
    best = {"probabilities": float("inf"), "decoding": float("inf")}
    for _ in range(args.rounds):  # round robin: both ways see the same machine state
        for name, judge in (("probabilities", by_probs), ("decoding", by_text)):
            _, seconds = in_worker(lambda: timed(lambda: [judge.verdict(m) for m in orders]))
            best[name] = min(best[name], seconds)
    verdicts = {name: [judge.verdict(m)[0] for m in orders] for name, judge in
                (("probabilities", by_probs), ("decoding", by_text))}
    for name, seconds in best.items():
        print(f"{name:>13}: {seconds:.3f} s per battle (both orders), verdicts {verdicts[name]}")
    print(f"decoding / probabilities: {best['decoding'] / best['probabilities']:.1f}x")
    print(f"# load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
