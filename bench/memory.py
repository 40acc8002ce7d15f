"""Memory of the seed models' shapes at bf16 and int8, and the int8 choice (speed, drift, text).

    python bench/memory.py                  # both parts (a few minutes on 2 cores)
    python bench/memory.py --part seeds     # only the seed-shaped memory part
    python bench/memory.py --part int8      # only the int8 speed / drift part

Part "int8": SmolLM2-135M (embedded GGUF) and a tiny random Llama at float32, bfloat16 and int8
(fused kernel, and the dequantise-on-the-fly fallback): decode tok/s relative to float32 in this
run, max abs logit drift vs float32, and the greedy text.

Part "seeds": random-weight models of > 1B parameters with ChatGLM3-6B's widths (GLM, 3 layers)
and Qwen-7B-Chat's widths (Qwen2, 2 layers), saved in the original legacy layout when the legacy
loaders are installed (else the native layout), each loaded in its own subprocess through
`llm_compare.loading.load_model` so peaks don't mix. Prints resident bytes per parameter, load
peak / resident, measured vs estimated, and the projection for both real seed models on 24 GiB.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import torch  # noqa: E402

from llm_compare.loading.memory import APP_BYTES, GiB, count_parameters, estimate  # noqa: E402
from llm_compare.specs import ModelSpec  # noqa: E402

FIXTURES = Path(os.environ.get("LLM_COMPARE_LEGACY_FIXTURES", "/work/shared/fixtures/legacy"))
CHATGLM3_6B = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"], "padded_vocab_size": 65024, "hidden_size": 4096,
    "ffn_hidden_size": 13696, "num_layers": 28, "num_attention_heads": 32, "multi_query_attention": True,
    "multi_query_group_num": 2, "kv_channels": 128, "add_qkv_bias": True, "add_bias_linear": False,
    "rmsnorm": True, "post_layer_norm": True, "original_rope": True, "layernorm_epsilon": 1e-5,
    "apply_residual_connection_post_layernorm": False, "seq_length": 8192, "tie_word_embeddings": False,
    "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float16",
}
QWEN_7B_CHAT = {
    "model_type": "qwen", "architectures": ["QWenLMHeadModel"], "vocab_size": 151936, "hidden_size": 4096,
    "intermediate_size": 22016, "num_hidden_layers": 32, "num_attention_heads": 32, "kv_channels": 128,
    "no_bias": True, "rotary_pct": 1.0, "rotary_emb_base": 10000, "layer_norm_epsilon": 1e-6,
    "seq_length": 8192, "max_position_embeddings": 8192, "tie_word_embeddings": False, "use_dynamic_ntk": True,
    "use_logn_attn": True, "torch_dtype": "bfloat16",
}
SEEDS = {"ChatGLM3-6B": CHATGLM3_6B, "Qwen-7B-Chat": QWEN_7B_CHAT}


def legacy_loaders() -> bool:
    return all(importlib.util.find_spec(f"llm_compare.loading.{m}") for m in ("legacy_chatglm3", "legacy_qwen"))


# ---- part "seeds": build, save, load in subprocesses ------------------------------------------


def legacy_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a checkpoint in the original chatglm / qwen layout."""
    h, v = config["hidden_size"], config.get("padded_vocab_size", config.get("vocab_size"))
    heads, hd = config["num_attention_heads"], config["kv_channels"]
    if config["model_type"] == "chatglm":
        qkv = heads * hd + 2 * config["multi_query_group_num"] * hd
        t = {"transformer.embedding.word_embeddings.weight": (v, h), "transformer.encoder.final_layernorm.weight": (h,),
             "transformer.output_layer.weight": (v, h)}
        for i in range(config["num_layers"]):
            p = f"transformer.encoder.layers.{i}."
            t |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                  p + "self_attention.query_key_value.weight": (qkv, h), p + "self_attention.query_key_value.bias": (qkv,),
                  p + "self_attention.dense.weight": (h, heads * hd),
                  p + "mlp.dense_h_to_4h.weight": (2 * config["ffn_hidden_size"], h),
                  p + "mlp.dense_4h_to_h.weight": (h, config["ffn_hidden_size"])}
        return t
    inter = config["intermediate_size"] // 2
    t = {"transformer.wte.weight": (v, h), "transformer.ln_f.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        t |= {p + "ln_1.weight": (h,), p + "ln_2.weight": (h,), p + "attn.c_attn.weight": (3 * h, h),
              p + "attn.c_attn.bias": (3 * h,), p + "attn.c_proj.weight": (h, h), p + "mlp.w1.weight": (inter, h),
              p + "mlp.w2.weight": (inter, h), p + "mlp.c_proj.weight": (h, inter)}
    return t


def native_config(config: dict):
    """The native transformers config with the same widths (used when the legacy loaders are absent)."""
    from transformers import GlmConfig, Qwen2Config

    if config["model_type"] == "chatglm":
        return GlmConfig(vocab_size=config["padded_vocab_size"], hidden_size=config["hidden_size"],
                         intermediate_size=config["ffn_hidden_size"], num_hidden_layers=config["num_layers"],
                         num_attention_heads=config["num_attention_heads"],
                         num_key_value_heads=config["multi_query_group_num"], head_dim=config["kv_channels"],
                         attention_bias=True, tie_word_embeddings=False, pad_token_id=0, eos_token_id=2)
    return Qwen2Config(vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
                       intermediate_size=config["intermediate_size"] // 2,
                       num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
                       num_key_value_heads=config["num_attention_heads"], tie_word_embeddings=False)


def random_tensor(shape, generator) -> torch.Tensor:
    if len(shape) == 1:  # norms around 1, biases small: either is harmless for a memory benchmark
        return (1 + 0.02 * torch.randn(shape, generator=generator)).to(torch.bfloat16)
    return (0.02 * torch.randn(shape, generator=generator)).to(torch.bfloat16)


def build_checkpoint(name: str, config: dict, target: Path, legacy: bool) -> None:
    """A random bf16 checkpoint of `config` in `target` (legacy or native layout), with a tokenizer."""
    from safetensors.torch import save_file

    if (target / "complete").exists():
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    if legacy:
        shapes = legacy_tensors(config)
        (target / "config.json").write_text(json.dumps(config, indent=2))
        fixture = FIXTURES / ("chatglm3-6b-tiny" if config["model_type"] == "chatglm" else "qwen-7b-chat-tiny")
        for f in ("tokenizer.model", "qwen.tiktoken", "tokenizer_config.json", "generation_config.json"):
            if (fixture / f).exists():
                shutil.copy(fixture / f, target / f)
    else:
        from transformers import AutoModelForCausalLM

        cfg = native_config(config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        shapes = {k: tuple(p.shape) for k, p in model.state_dict().items() if "rotary" not in k}
        cfg.save_pretrained(target)
        word_level_tokenizer().save_pretrained(target)
    for i, part in enumerate(_halves(list(shapes))):  # two shards keep the builder's own peak lower
        tensors = {k: random_tensor(shapes[k], g) for k in part}
        save_file(tensors, target / f"model-{i + 1:05d}-of-00002.safetensors", metadata={"format": "pt"})
        del tensors
        gc.collect()
    index = {"metadata": {}, "weight_map": {k: f"model-{i + 1:05d}-of-00002.safetensors"
                                            for i, part in enumerate(_halves(list(shapes))) for k in part}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    (target / "complete").write_text(name)
    print(f"  built {name}: {sum(_prod(s) for s in shapes.values()) / 1e9:.2f}B params in {target}", flush=True)


def _halves(items):
    return [items[: len(items) // 2], items[len(items) // 2 :]]


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def word_level_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(62)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


def child_load(directory: str, dtype: str) -> None:
    """Runs in a fresh process: load once, report RSS growth, anonymous memory and the load peaks."""
    import threading

    from llm_compare.loading import load_model

    torch.set_num_threads(1)
    gc.collect()
    base, base_anon = psutil.Process().memory_info().rss, rss_anon()
    peak_anon, done = [base_anon], threading.Event()

    def sample():  # anonymous memory every 10 ms: the part of the peak the kernel cannot drop
        while not done.wait(0.01):
            peak_anon[0] = max(peak_anon[0], rss_anon())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    loaded = load_model(ModelSpec(name="bench", source=directory, dtype=dtype, chat_format="raw"))
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    gc.collect()
    with torch.no_grad():  # one forward pass: resident while answering, not just after loading
        loaded.model(torch.tensor([[3, 4, 5, 6]]))
    gc.collect()
    rss = psutil.Process().memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # includes file pages read
    print(json.dumps({"resident": rss - base, "anon": rss_anon() - base_anon, "peak": peak - base,
                      "peak_anon": max(peak_anon[0], rss_anon()) - base_anon, "seconds": seconds,
                      "loader": loaded.loader}))


def rss_anon() -> int:
    """Anonymous resident memory (Linux): RSS minus file-backed pages, which the kernel may drop."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return psutil.Process().memory_info().rss


def measure(directory: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(directory), dtype], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child load of {directory} ({dtype}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_seeds(workdir: Path, glm_layers: int, qwen_layers: int) -> None:
    legacy = legacy_loaders()
    layout = "original legacy layout (legacy loaders installed)" if legacy else "native layout (no legacy loaders here)"
    print(f"\n## Seed-shaped models: random bf16 weights, {layout}\n", flush=True)
    shrunk = {"ChatGLM3-6B": CHATGLM3_6B | {"num_layers": glm_layers},
              "Qwen-7B-Chat": QWEN_7B_CHAT | {"num_hidden_layers": qwen_layers}}
    ratios = {}
    print("| model (layers) | params | dtype | resident (RSS) | anonymous | bytes/param | load peak RSS "
          "| load peak anonymous | peak/resident (anon) | resident/estimate | load s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, config in shrunk.items():
        layers = config.get("num_layers", config.get("num_hidden_layers"))
        directory = workdir / f"{name}-{'legacy' if legacy else 'native'}-{layers}"
        build_checkpoint(name, config, directory, legacy)
        params = count_parameters(config).total
        bf16_weights = estimate(config, "bfloat16").weights_bytes
        for dtype in ("bfloat16", "int8"):
            m = measure(directory, dtype)
            weights = estimate(config, dtype).weights_bytes
            # resident scales with this dtype's weights; the load peak with the bf16 weights (loaded first)
            ratios[name, dtype] = (m["anon"] / weights, m["peak_anon"] / bf16_weights)
            print(f"| {name} ({layers}) | {params / 1e9:.2f}B | {dtype} | {m['resident'] / GiB:.2f} GiB "
                  f"| {m['anon'] / GiB:.2f} GiB | {m['anon'] / params:.2f} | {m['peak'] / GiB:.2f} GiB "
                  f"| {m['peak_anon'] / GiB:.2f} GiB | {m['peak_anon'] / m['anon']:.2f} | {m['anon'] / weights:.2f} "
                  f"| {m['seconds']:.1f} |", flush=True)
    project(ratios)


def project(ratios: dict) -> None:
    """Both real seed models: the config estimate, scaled up where this run measured more."""
    real = {}
    for name, config in SEEDS.items():
        bf16_weights = estimate(config, "bfloat16").weights_bytes
        for dtype in ("bfloat16", "int8"):
            est = estimate(config, dtype)
            resident_ratio, peak_ratio = ratios[name, dtype]
            real[name, dtype] = (max(est.resident_bytes, est.weights_bytes * resident_ratio),
                                 max(est.peak_bytes, bf16_weights * peak_ratio))
    for dtype in ("gguf-q8_0", "gguf-q4_k_m"):  # llama.cpp maps the exported file: file + KV, no load peak
        for name, config in SEEDS.items():
            est = estimate(config, dtype)
            real[name, dtype] = (est.resident_bytes, est.resident_bytes)
    budget = 24 * GiB
    print(f"\n## Projection for the real seed models (24 GiB machine, app ≈{APP_BYTES / GiB:.1f} GiB)\n")
    print("| option | ChatGLM3-6B resident | Qwen-7B-Chat resident | together + app | peak while the second loads "
          "(better order) | fits 24 GiB |")
    print("|---|---|---|---|---|---|")
    options = [
        ("both bfloat16", "bfloat16", "bfloat16"), ("both int8", "int8", "int8"),
        ("ChatGLM3 bf16 + Qwen int8", "bfloat16", "int8"), ("ChatGLM3 int8 + Qwen bf16", "int8", "bfloat16"),
        ("both gguf-q8_0 (llama.cpp)", "gguf-q8_0", "gguf-q8_0"), ("both gguf-q4_k_m (llama.cpp)", "gguf-q4_k_m", "gguf-q4_k_m"),
    ]
    for label, d_glm, d_qwen in options:
        glm, qwen = real["ChatGLM3-6B", d_glm], real["Qwen-7B-Chat", d_qwen]
        together = glm[0] + qwen[0] + APP_BYTES
        peak = min(glm[0] + qwen[1], qwen[0] + glm[1]) + APP_BYTES
        fits = "yes" if max(together, peak) <= budget else "NO"
        print(f"| {label} | {glm[0] / GiB:.1f} GiB | {qwen[0] / GiB:.1f} GiB | {together / GiB:.1f} GiB "
              f"| {peak / GiB:.1f} GiB | {fits} |")
    for dtype in ("bfloat16", "int8"):
        one = max(max(real["ChatGLM3-6B", dtype]), max(real["Qwen-7B-Chat", dtype])) + APP_BYTES
        print(f"| load-on-demand, {dtype} (one model resident) | | | {one / GiB:.1f} GiB (largest) | {one / GiB:.1f} GiB "
              f"| {'yes' if one <= budget else 'NO'} |")


# ---- part "int8": speed, drift and text -------------------------------------------------------


def decode_seconds(model, ids, tokens: int) -> float:
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return time.perf_counter() - t0


def compare(label: str, variants: dict, ids, tokenizer=None, tokens: int = 48, runs: int = 3) -> None:
    """Drift and text per variant, then decode speed timed round-robin (fair under changing load)."""
    from llm_compare.loading.memory import Int8Linear

    print(f"\n### {label}\n")
    print("| variant | decode tok/s | vs float32 | max abs logit drift vs float32 | greedy text |")
    print("|---|---|---|---|---|")
    rows, times = {}, {name: [] for name in variants}
    for name, model in variants.items():
        if name == "int8 (dequantise on the fly)":
            for m in model.modules():
                if isinstance(m, Int8Linear):
                    m.fused = False
        with torch.no_grad():
            logits = model(ids).logits.float()
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) if tokenizer else "-"
        rows[name] = (logits, " ".join(text.split())[:90].replace("|", "/"))
    for _ in range(runs):
        for name, model in variants.items():
            times[name].append(decode_seconds(model, ids, tokens))
    speed = {name: tokens / sorted(t)[len(t) // 2] for name, t in times.items()}
    ref_name = next(iter(variants))
    for name, (logits, text) in rows.items():
        drift = (logits - rows[ref_name][0]).abs().max()
        print(f"| {name} | {speed[name]:.1f} | {speed[name] / speed[ref_name]:.2f}× | {drift:.3f} | {text} |",
              flush=True)


def seed_width_matmul(runs: int = 20) -> None:
    """One decode step through one Qwen-7B MLP projection (4096 → 11008): memory-bound, like 7B decode."""
    from llm_compare.loading.memory import Int8Linear

    linear = torch.nn.Linear(4096, 11008, bias=False)
    variants = {"float32": (linear, torch.float32), "bfloat16": (torch.nn.Linear(4096, 11008, bias=False), torch.bfloat16),
                "int8": (Int8Linear(linear), torch.bfloat16)}
    variants["bfloat16"][0].load_state_dict(linear.state_dict())
    variants["bfloat16"][0].to(torch.bfloat16)
    times = {name: [] for name in variants}
    with torch.no_grad():
        for _ in range(runs):
            for name, (layer, dtype) in variants.items():
                x = torch.randn(1, 4096).to(dtype)
                t0 = time.perf_counter()
                layer(x)
                times[name].append(time.perf_counter() - t0)
    ms = {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}
    print("\n### One seed-width projection (x[1, 4096] @ W[11008, 4096]), median of 20\n")
    print("| variant | ms | vs float32 | weight bytes |")
    print("|---|---|---|---|")
    for name, (layer, _) in variants.items():
        size = sum(t.numel() * t.element_size() for t in list(layer.parameters()) + list(layer.buffers()))
        print(f"| {name} | {ms[name]:.2f} | {ms['float32'] / ms[name]:.2f}× | {size / 2**20:.0f} MiB |")


def part_int8() -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm_compare.loading import load_model
    from llm_compare.loading.memory import quantize_int8

    torch.set_num_threads(1)
    print("\n## int8 weight-only: speed, drift, text (1 thread, medians of 3 round-robin runs)")
    seed_width_matmul()
    specs = {d: ModelSpec(name="smol", source="embedded:smollm2", dtype=d) for d in ("float32", "bfloat16", "int8")}
    loaded = {d: load_model(s) for d, s in specs.items()}
    loaded["int8 (dequantise on the fly)"] = load_model(specs["int8"])
    fmt = loaded["float32"].chat_format
    ids = torch.tensor([fmt.encode([{"role": "user", "content": "Explain in two sentences why the sky is blue."}])])
    compare("SmolLM2-135M-Instruct (embedded GGUF via transformers)", {k: v.model for k, v in loaded.items()}, ids,
            loaded["float32"].tokenizer)
    del loaded
    gc.collect()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2)
    base = AutoModelForCausalLM.from_config(config).eval()
    state = base.state_dict()
    variants = {}
    for name in ("float32", "bfloat16", "int8", "int8 (dequantise on the fly)"):
        m = AutoModelForCausalLM.from_config(config).eval()
        m.load_state_dict(state)
        if name != "float32":
            m = m.to(torch.bfloat16) if name == "bfloat16" else quantize_int8(m)
        variants[name] = m
    ids = torch.randint(0, 4096, (1, 32), generator=torch.Generator().manual_seed(1))
    compare("tiny random Llama (hidden 512, 4 layers)", variants, ids)
    if legacy_loaders():
        for fixture in ("chatglm3-6b-tiny", "qwen-7b-chat-tiny"):
            source = str(FIXTURES / fixture)
            models = {d: load_model(ModelSpec(name=fixture, source=source, dtype=d)) for d in ("float32", "bfloat16", "int8")}
            ids = torch.tensor([models["float32"].chat_format.encode([{"role": "user", "content": "你好, hello"}])])
            compare(f"fixture {fixture} (legacy loader)", {k: v.model for k, v in models.items()}, ids, runs=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "int8", "seeds"), default="all")
    p.add_argument("--workdir", default="/tmp/llm_compare_bench_memory", help="where the random checkpoints go")
    p.add_argument("--glm-layers", type=int, default=3, help="ChatGLM3-shaped layers (3: 1.15B params)")
    p.add_argument("--qwen-layers", type=int, default=2, help="Qwen-shaped layers (2: 1.65B params)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints for the next run")
    p.add_argument("--child", nargs=2, metavar=("DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_load(*args.child)
    print(f"torch {torch.__version__}, {psutil.cpu_count()} CPUs, RAM {psutil.virtual_memory().total / GiB:.1f} GiB")
    if args.part in ("all", "int8"):
        part_int8()
    if args.part in ("all", "seeds"):
        workdir = Path(args.workdir)
        try:
            part_seeds(workdir, args.glm_layers, args.qwen_layers)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
