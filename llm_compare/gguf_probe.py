"""The exported-GGUF paths measured on this CPU: llama.cpp's turn and the one-time export, per parameter.

`dtype_choice` weighs these against the transformers precisions (`cpu_probe.dtype_costs`) when a
big model directory has no dtype. Measured once per machine and model width (`machine.cached_probe`:
a measurement taken while other processes loaded the CPU is used but not kept), on a random-weight
Llama-shaped checkpoint at the model's hidden and MLP widths with as many layers as make about
PROBE_PARAMS parameters (weights larger than the CPU's caches, as a real model's are), exported by
the project's own writer and llama.cpp's quantizer, and run by llama.cpp with the backend's KV cache:

- export: seconds to write the 16-bit GGUF and quantize it, per parameter (reading a real
  checkpoint's shards from disk comes on top: the figure is a lower bound);
- turn: cpu_probe's representative turn (a TURN_PROMPT-token prompt pass + TURN_NEW decoded tokens),
  per parameter: the decode step reads every weight once and the prompt pass multiplies by each.

llama.cpp's fixed cost per evaluation is counted as if it grew with the parameters too, which
overstates the GGUF paths for big models: the choice errs toward the unquantized weights.

It runs the exported backend's llama.cpp options, so it sits above `backends/` (beside `pool`, whose
`dtype_choice` is its one user), unlike `cpu_probe`, which the backends use.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from llm_compare.backends.llamacpp_exported import kv_cache_kwargs
from llm_compare.cpu_probe import TURN_NEW, TURN_PROMPT, torch_kernels
from llm_compare.loading import resolve_source
from llm_compare.loading.gguf.export import export_steps
from llm_compare.loading.gguf.plan import head_dim, plan_export
from llm_compare.loading.gguf.vocab import byte_to_unicode
from llm_compare.loading.gguf.write import quantize, write_gguf
from llm_compare.machine import cache_root, cached_probe, machine_key, probe_results
from llm_compare.progress import status
from llm_compare.threads import cpu_cores

PROBE_TYPES = ("gguf-q4_k_m", "gguf-q8_0")  # the quantized exports "auto" may choose
PROBE_PARAMS = 150_000_000  # parameters of the probe checkpoint (≈ 90 MiB in Q4_K_M: beyond any L3)
MAX_LAYERS = 16
HEAD_DIM = 128  # the usual head width of the models this matters for
VOCAB = 512  # byte tokens and one merge: the probe feeds ids, never text
DECODE_STEPS = 8


def available() -> str | None:
    """Why the GGUF paths cannot run here, or None when they can."""
    for module, dist in (("llama_cpp", "llama-cpp-python"), ("gguf", "gguf")):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed"
    return None


def probe_shape(hidden: int, mlp: int) -> tuple[int, int]:
    """(attention heads, layers) of the probe checkpoint at these widths."""
    heads = max(1, hidden // HEAD_DIM)
    while hidden % heads:
        heads -= 1
    per_layer = 4 * hidden * hidden + 3 * hidden * mlp
    return heads, min(MAX_LAYERS, max(1, math.ceil(PROBE_PARAMS / per_layer)))


def write_probe_model(directory: Path, hidden: int, mlp: int) -> int:
    """A random-weight Llama checkpoint (bf16 safetensors, byte-level tokenizer) at these widths; its parameters."""
    import torch
    from safetensors.torch import save_file

    heads, layers = probe_shape(hidden, mlp)
    directory.mkdir(parents=True)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
              "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": heads, "vocab_size": VOCAB, "max_position_embeddings": 1024,
              "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    (directory / "config.json").write_text(json.dumps(config))
    vocab = {ch: i for i, ch in enumerate(byte_to_unicode().values())} | {"ab": 256}  # llama.cpp wants a merge
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {"version": "1.0", "added_tokens": [], "pre_tokenizer": byte_level, "decoder": byte_level,
                 "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"]}}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    gen = torch.Generator().manual_seed(0)

    def weight(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": weight(VOCAB, hidden), "lm_head.weight": weight(VOCAB, hidden),
               "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {p + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
                    p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
                    **{p + f"self_attn.{n}_proj.weight": weight(hidden, hidden) for n in "qkvo"},
                    p + "mlp.gate_proj.weight": weight(mlp, hidden), p + "mlp.up_proj.weight": weight(mlp, hidden),
                    p + "mlp.down_proj.weight": weight(hidden, mlp)}
    save_file(tensors, str(directory / "model.safetensors"))
    return sum(t.numel() for t in tensors.values())


def time_turn(path: Path, dtype: str, head_dim: int) -> tuple[float, float]:
    """(prompt pass seconds for TURN_PROMPT ids, seconds per decoded token): best of two rounds."""
    import llama_cpp

    threads = cpu_cores()
    llm = llama_cpp.Llama(str(path), n_ctx=TURN_PROMPT + 2 * DECODE_STEPS, n_threads=threads,
                          n_threads_batch=threads, verbose=False, **kv_cache_kwargs(dtype, head_dim))
    ids = [(7 * i + 3) % VOCAB for i in range(TURN_PROMPT + DECODE_STEPS)]
    prefill = decode = math.inf
    try:
        for _ in range(2):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids[:TURN_PROMPT])
            prefill = min(prefill, time.perf_counter() - t0)
            steps = []
            for token in ids[TURN_PROMPT:]:
                t0 = time.perf_counter()
                llm.eval([token])
                steps.append(time.perf_counter() - t0)
            decode = min(decode, statistics.median(steps))
    finally:
        llm.close()
    return prefill, decode


def measure_gguf_costs(hidden: int, mlp: int) -> dict:
    """{gguf dtype: per-parameter seconds of a turn and of the export, with the probe's raw figures}."""
    cache_root().mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gguf-probe-", dir=cache_root()))  # on disk: /tmp may be RAM
    try:
        params = write_probe_model(folder / "model", hidden, mlp)
        plan = plan_export(resolve_source(str(folder / "model")))
        t0 = time.perf_counter()
        write_gguf(plan, folder / "source.gguf", "source")
        write_s = time.perf_counter() - t0
        out = {}
        for dtype in PROBE_TYPES:
            target = folder / f"{dtype}.gguf"
            t0 = time.perf_counter()
            quantize(folder / "source.gguf", target, export_steps(dtype)[1])
            export_s = write_s + time.perf_counter() - t0
            prefill, decode = time_turn(target, dtype, head_dim(plan.config))
            turn = prefill + TURN_NEW * decode
            out[dtype] = {"width": f"{hidden}x{mlp}", "params": params, "prefill_s": prefill, "decode_s": decode, "turn_s": turn,
                          "export_s": export_s, "turn_s_per_param": turn / params,
                          "export_s_per_param": export_s / params}
            target.unlink()
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def gguf_costs(hidden: int, mlp: int) -> dict:
    """The cached GGUF figures at this width on this machine (first use: 15 s at 7B widths, 2-core EPYC)."""
    import llama_cpp

    key = machine_key("gguf", torch_kernels(), f"llama.cpp {llama_cpp.__version__}", f"{hidden}x{mlp}",
                      ",".join(PROBE_TYPES), f"params>{PROBE_PARAMS}")

    def measure():
        status(f"measuring the GGUF export paths at width {hidden}x{mlp} (once per machine and width, ≈15 s)")
        return measure_gguf_costs(hidden, mlp)

    return cached_probe("gguf", key, measure)


def summary_lines() -> list[str]:
    """The GGUF figures measured so far on this machine (each big model width's first `auto` makes one)."""
    known = probe_results("gguf")
    lines = [f"GGUF exports (llama.cpp): measured at each big model width's first dtype \"auto\"; {len(known)} so far"]
    for found in known.values():
        for dtype, c in sorted(found.items()) if isinstance(found, dict) else ():
            lines.append(f"  {c['width']} {dtype:11s} turn {c['turn_s_per_param'] * 1e9:6.2f} s per billion parameters "
                         f"(prompt {c['prefill_s'] * 1000:.0f} ms + {TURN_NEW} x decode {c['decode_s'] * 1000:.2f} ms"
                         f" for {c['params'] / 1e6:.0f}M), export {c['export_s_per_param'] * 1e9:.1f} s per billion")
    return lines
