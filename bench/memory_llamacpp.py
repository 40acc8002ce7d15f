"""Both seed models on the fast path (gguf-q4_k_m, llama.cpp) as actually allocated, projected to full depth.

The config estimate cannot see what llama.cpp allocates at load, so this asks llama.cpp: the
random-weight checkpoints of `bench/seven_b.py` (ChatGLM3-6B and Qwen-7B-Chat widths at two layer
counts) are opened through the engine's own backend (its context options, verbose), each in its
own process, and answer a 300-token prompt. llama.cpp prints every buffer it allocates: the
weights (mapped, or copied into its CPU kernels' repacked layout), the KV cache, the compute
buffer (activations and logits for one batch) and the output buffer. Weights, KV cache and
compute buffer are projected separately to 28 / 32 layers (weights: the fitted file size or the
config estimate, whichever is larger; KV cache: its per-layer size; buffers: measured constant),
and both models plus the app are added up. The anonymous memory the process really touched
(RSS, with `use_mmap=False` so each byte is counted once) is shown beside the allocation: the
compute buffer is reserved for the worst case and only partly touched.

Two settings: the app's (specs.GGUF_KV_CACHE: f16 since 2026-12-03, q8_0 with flash attention before; for
specs.CONTEXT_TOKENS tokens) and what it replaced (f16 cache, no flash attention, 4096 tokens).

    python bench/seven_b.py --prepare      # the checkpoints and exports (once)
    python bench/memory_llamacpp.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header  # noqa: E402
from memory import proc_status_bytes  # noqa: E402
from seven_b import SEEDS, fit, long_prompt  # noqa: E402

from llm_compare.loading.memory import APP_BYTES, GiB, MiB, estimate  # noqa: E402
from llm_compare.loading.size_model import GGML_TYPES  # noqa: E402
from llm_compare.specs import CONTEXT_TOKENS  # noqa: E402

BUDGET = 10 * GiB  # the goal for both seed models resident together
SETTINGS = {  # label: (context options beyond the app's, context tokens)
    f"app: specs.GGUF_KV_CACHE, {CONTEXT_TOKENS} tokens": (None, None),
    "before: f16 KV cache, no flash attention, 4096 tokens": ({"type_k": GGML_TYPES["f16"].id, "type_v": GGML_TYPES["f16"].id,
                                                              "flash_attn": False}, 4096),
}
BUFFER = re.compile(r"(model|KV|compute|output) buffer size =\s+([\d.]+) MiB")


def child(directory: str, dtype: str, setting: str) -> None:
    """Open one exported model through the app's backend (verbose), answer a long prompt."""
    from llm_compare.backends.llamacpp import LlamaCppBackend
    from llm_compare.backends.llamacpp_exported import kv_cache_kwargs, text_side
    from llm_compare.engine import stream_reply
    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.plan import head_dim, plan_export
    from llm_compare.loading.gguf.export import exported_gguf
    from llm_compare.params import GenerationParams
    from llm_compare.specs import ModelSpec

    changed, context = SETTINGS[setting]
    spec = ModelSpec(name="bench", source=directory, dtype=dtype, threads=os.cpu_count() or 1, context=context)
    source = resolve_source(directory)
    path = exported_gguf(source, dtype)  # built by seven_b --prepare: only looked up here
    options = changed or kv_cache_kwargs(dtype, head_dim(plan_export(source).config))
    before = proc_status_bytes("RssAnon")
    backend = LlamaCppBackend(spec, path=path, text=text_side(source, spec),
                              open_kwargs=options | {"verbose": True, "use_mmap": False})
    list(stream_reply(backend, long_prompt(backend.prompt, 300), GenerationParams(max_new_tokens=8, greedy=True)))
    print(json.dumps({"touched": proc_status_bytes("RssAnon") - before, "file": path.stat().st_size}))


def measure(directory: Path, dtype: str, setting: str) -> dict:
    """The child's figures plus llama.cpp's own allocations, by kind, in bytes."""
    done = subprocess.run([sys.executable, __file__, "--child", str(directory), dtype, setting],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{directory.name} ({setting}) failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1]) | {"model": 0, "KV": 0, "compute": 0, "output": 0}
    for kind, mib in BUFFER.findall(done.stderr):
        out[kind] += float(mib) * MiB
    return out


def project(name: str, layers: list[int], rows: list[dict], dtype: str) -> dict:
    """Each part at the model's full depth."""
    config, layers_key = SEEDS[name]
    full = config[layers_key]
    weights = max(fit(layers, [r["file"] for r in rows], full), estimate(config, dtype).weights_bytes)
    kv_per_layer = (rows[-1]["KV"] - rows[0]["KV"]) / (layers[-1] - layers[0])
    buffers = max(r["compute"] + r["output"] for r in rows)  # one batch's activations: not per layer
    return {"weights": weights, "KV": kv_per_layer * full, "buffers": buffers, "total": weights + kv_per_layer * full + buffers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/llm_compare_bench_seven_b", help="bench/seven_b.py's --workdir")
    p.add_argument("--layers", type=int, nargs=2, default=[1, 3])
    p.add_argument("--dtype", default="gguf-q4_k_m")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    os.environ.setdefault("LLM_COMPARE_CACHE", str(Path(args.workdir) / "cache"))  # seven_b's exports
    header(f"both seed models at {args.dtype} on llama.cpp, as allocated")
    print(f"\n| setting | model | {' | '.join(f'L={n}: allocated / touched' for n in args.layers)} "
          "| full depth: weights | KV cache | buffers | total |")
    print("|---|---|" + "---|" * len(args.layers) + "---|---|---|---|")
    totals = {}
    for setting in SETTINGS:
        totals[setting] = APP_BYTES
        for name in SEEDS:
            rows = [measure(Path(args.workdir) / f"{name}-{n}", args.dtype, setting) for n in args.layers]
            full = project(name, args.layers, rows, args.dtype)
            totals[setting] += full["total"]
            cells = " | ".join(f"{(r['model'] + r['KV'] + r['compute'] + r['output']) / GiB:.2f} / "
                               f"{r['touched'] / GiB:.2f} GiB" for r in rows)
            parts = " | ".join(f"{full[k] / GiB:.2f} GiB" for k in ("weights", "KV", "buffers", "total"))
            print(f"| {setting} | {name} | {cells} | {parts} |", flush=True)
    print(f"\nBoth resident + app ({APP_BYTES / GiB:.1f} GiB), projected to full depth:")
    for setting, total in totals.items():
        print(f"  {setting}: {total / GiB:.2f} GiB ({'within' if total <= BUDGET else 'OVER'} "
              f"the {BUDGET / GiB:.0f} GiB goal)")


if __name__ == "__main__":
    main()
