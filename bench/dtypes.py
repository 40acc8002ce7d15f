"""Which precision to default to: what the CPU probe chose, against whole-model measurements.

1. The probe (llm_compare/cpu_probe.py): its per-dtype cost of a ~300-token prompt + ~200 new tokens
   at the embedded model's width and at Qwen-7B's, and the dtype it makes the default.
2. The embedded SmolLM2-135M in every dtype: decode tok/s and first-token time vs float32 (medians
   of --runs), with the start of each reply so broken output (e.g. loops) is visible.
3. `--layer`: the bf16 bias path at Qwen-7B widths (2 random-weight Qwen2 layers, hidden 4096,
   32 heads x 128, MLP 11008; q/k/v carry a bias as in Qwen-1 and ChatGLM3): one decode step with
   the biases, without them, and with the old `torch.addmv` path, as ratios.
4. The output head at Qwen-7B's size (151936 x 4096) on the last prompt row, as `generate` hands it
   over (a view with the whole prompt's batch stride) and re-viewed with standard strides (what the
   backend's hook does), per dtype, as a ratio.
"""

from __future__ import annotations

import argparse

from _common import ASK, header, median

from llm_compare import cpu_probe
from llm_compare.backends import open_backend
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

QWEN7B = (4096, 11008)


def probe_section():
    for width in (cpu_probe.model_width("embedded:smollm2"), QWEN7B):
        for line in cpu_probe.summary_lines(*width):
            print(line)


def whole_model(dtypes: list[str], tokens: int, runs: int):
    params = GenerationParams(max_new_tokens=tokens, greedy=True)
    rows = {}
    for dtype in dtypes:
        try:
            backend = open_backend(ModelSpec(name=dtype, source="embedded:smollm2", dtype=dtype))
        except Exception as e:  # int8 may be unavailable; say so and go on
            print(f"{dtype}: skipped ({e})")
            continue
        list(stream_reply(backend, ASK, GenerationParams(max_new_tokens=4, greedy=True)))  # warm-up
        finals = [list(stream_reply(backend, ASK, params))[-1] for _ in range(runs)]
        rows[dtype] = (median([f.metrics.tokens_per_s for f in finals]), median([f.metrics.ttft_s for f in finals]),
                       finals[0].text, finals[0].metrics.threads)
        backend.close()
        del backend
    base = rows.get("float32")
    print(f"\nembedded SmolLM2-135M, {tokens} greedy tokens, medians of {runs}:")
    for dtype, (rate, ttft, text, threads) in rows.items():
        rel = f"{rate / base[0]:.2f}x decode, {ttft / base[1]:.2f}x first-token time" if base else ""
        print(f"{dtype:9s} {rate:6.1f} tok/s  ttft {ttft * 1000:6.0f} ms  {rel}  ({threads} threads)")
        print(f"          reply: {text[:90]!r}")


def bias_layer(runs: int):
    """Decode-step time of 2 bf16 Qwen-7B-width layers: with q/k/v biases, without, and via addmv."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from llm_compare.backends.transformers import MatvecLinear, use_matvec_for_decode

    config = Qwen2Config(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                         num_hidden_layers=2, vocab_size=1024)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    use_matvec_for_decode(model)
    ids = torch.tensor([[1]])

    def step_s():
        with torch.inference_mode():
            return cpu_probe._in_thread(lambda: cpu_probe._timed(lambda: model(input_ids=ids, use_cache=False),
                                                                 budget_s=1.0, max_runs=runs * 5))

    qkv = [m for name, m in model.named_modules() if name.endswith(("q_proj", "k_proj", "v_proj"))]
    biases = [m.bias for m in qkv]

    class AddmvLinear(torch.nn.Linear):  # the path MatvecLinear used for biased layers before
        def forward(self, x):
            if x.numel() != self.in_features:
                return torch.nn.functional.linear(x, self.weight, self.bias)
            return torch.addmv(self.bias, self.weight, x.reshape(-1)).view(*x.shape[:-1], self.out_features)

    def variant(cls, with_bias):
        for m, bias in zip(qkv, biases):
            m.__class__, m.bias = cls, bias if with_bias else None

    variants = {"bias": (torch.nn.Linear, True), "addmv": (AddmvLinear, True), "none": (torch.nn.Linear, False)}
    best = {k: float("inf") for k in variants}
    for _ in range(runs):  # interleaved rounds, fastest of each: other processes only slow runs down
        for name, (cls, with_bias) in variants.items():
            variant(cls, with_bias)
            best[name] = min(best[name], step_s())
    with_bias, addmv, without = best["bias"], best["addmv"], best["none"]
    switched = sum(isinstance(m, MatvecLinear) for m in model.modules())
    print(f"\nbf16 decode step, 2 layers at Qwen-7B widths ({switched} layers on torch.mv where it pays here):")
    print(f"  q/k/v with bias (nn.Linear)    {with_bias * 1000:7.1f} ms  {with_bias / without:.2f}x the bias-free layer")
    print(f"  q/k/v with bias via addmv (old) {addmv * 1000:6.1f} ms  {addmv / without:.2f}x")
    print(f"  without bias                   {without * 1000:7.1f} ms  1.00x")


def output_head(runs: int, prompt_tokens: int = 300):
    """The first token's output-head product: prompt-strided last row vs the same row re-viewed."""
    import time

    import torch

    from llm_compare.backends.transformers import canonical_strides

    print(f"\noutput head 151936 x 4096 on the last row of a {prompt_tokens}-token prompt (best of {runs}):")
    for dtype in (torch.bfloat16, torch.float32):
        weight = torch.randn(151936, 4096).to(dtype)
        last = torch.randn(1, prompt_tokens, 4096).to(dtype)[:, -1:, :]
        best = {}
        for name, x in (("as generate passes it", last), ("re-viewed", canonical_strides(None, (last,))[0])):
            for _ in range(runs):
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, weight)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        slow, fast = best.values()
        print(f"  {str(dtype).removeprefix('torch.'):9s} {slow * 1000:8.1f} ms as generate passes it, "
              f"{fast * 1000:6.1f} ms re-viewed: {slow / fast:.1f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32,bfloat16,float16,int8")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-model", action="store_true", help="only the probe and the bias-layer ratio")
    args = ap.parse_args()
    header("precision: the probe's choice, whole-model measurements, the bf16 bias path")
    probe_section()
    if not args.skip_model:
        whole_model(args.dtypes.split(","), args.tokens, args.runs)
    bias_layer(args.runs)
    output_head(args.runs)


if __name__ == "__main__":
    main()
