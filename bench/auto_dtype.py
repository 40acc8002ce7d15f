"""What dtype "auto" chooses for model directories of seed widths here, and the measured figures it uses.

For each model's config (a config.json and a stub shard: nothing is loaded), measured afresh in one
run with an empty probe cache: the transformers turn per parameter in float32 and bfloat16
(`cpu_probe.measure_turn_costs` at the width), the GGUF exports' turn and export per parameter
(`gguf_probe.measure_gguf_costs`), each projected to the whole model as `dtype_choice` projects
them, the ratios to the fastest unquantized precision, and the choice with its reason. "line" is
the size above which the fastest unquantized turn takes over QUICK_TURN_S at this width here: where
a quantized export starts to be considered.

    flock /work/wt/bench.lock nice -n 0 python bench/auto_dtype.py [--models SmolLM2-135M Qwen-7B-Chat]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header  # noqa: E402
from memory import CHATGLM3_6B, QWEN_7B_CHAT  # noqa: E402

from llm_compare import cpu_probe, dtype_choice, gguf_probe  # noqa: E402
from llm_compare.loading.memory import estimate  # noqa: E402
from llm_compare.specs import ModelSpec  # noqa: E402

LLAMA = {"model_type": "llama", "num_key_value_heads": 8, "max_position_embeddings": 4096}
MODELS = {
    "SmolLM2-135M": LLAMA | {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                             "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                             "tie_word_embeddings": True},
    "Qwen2-1.5B": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                   "tie_word_embeddings": True, "max_position_embeddings": 4096},
    "ChatGLM3-6B": CHATGLM3_6B,
    "Qwen-7B-Chat": QWEN_7B_CHAT,
}


def model_dir(root: Path, name: str, config: dict) -> str:
    """The directory as the decision sees it: config.json and a one-tensor stub shard."""
    import torch
    from safetensors.torch import save_file

    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    save_file({"stub": torch.zeros(2)}, str(d / "model.safetensors"))
    return str(d)


def report(name: str, source: str) -> None:
    hidden, mlp = cpu_probe.model_width(source)
    params = estimate(source, "bfloat16").params
    costs = cpu_probe.dtype_costs(hidden, mlp)
    per_param = {d: c["turn_s"] / (hidden * mlp) for d, c in costs.items()}
    quick = min(per_param, key=per_param.get)
    print(f"\n## {name}: {params / 1e9:.2f}B parameters, width {hidden}x{mlp}; "
          f"line ≈{dtype_choice.QUICK_TURN_S / per_param[quick] / 1e9:.2f}B parameters ({quick})")
    print("| path | turn per billion params | projected turn | export | vs " + quick + " (export counted) |")
    print("|---|---|---|---|---|")
    for d in sorted(per_param, key=per_param.get):
        print(f"| {d} | {per_param[d] * 1e9:.2f} s | {per_param[d] * params:.1f} s | – | "
              f"{per_param[quick] / per_param[d]:.2f}× |")
    if gguf_probe.available() is None:  # measured at every width here, also where auto would not ask
        t0 = time.perf_counter()
        figures = gguf_probe.gguf_costs(hidden, mlp)
        probe_s = time.perf_counter() - t0
        for d, c in figures.items():
            turn, export = c["turn_s_per_param"] * params, c["export_s_per_param"] * params
            counted = turn + export / dtype_choice.EXPORT_TURNS
            print(f"| {d} | {c['turn_s_per_param'] * 1e9:.2f} s | {turn:.1f} s | {export:.0f} s | "
                  f"{per_param[quick] * params / counted:.2f}× |")
        print(f"(the GGUF probe took {probe_s:.0f} s: a first use at this width pays it once)")
    print(dtype_choice.resolve(ModelSpec(name=name, source=source))[1].line)  # RAM: this machine's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    header("dtype auto: measured figures and choice per model size")
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"quick line {dtype_choice.QUICK_TURN_S:.0f} s, min speed-up {dtype_choice.MIN_SPEEDUP}×, "
          f"export counted over {dtype_choice.EXPORT_TURNS} turns")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLM_COMPARE_CACHE"] = str(Path(tmp) / "cache")  # measured afresh, never the user's cache
        os.environ.pop(cpu_probe.DTYPE_ENV, None)
        for name in args.models:
            report(name, model_dir(Path(tmp), name, MODELS[name]))
    print(f"\n# load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
