"""List the models in the registry."""

from __future__ import annotations

import json

from llm_compare.specs import load_registry


def configure(p):
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--json", action="store_true", help="one JSON object per model")


def run(args) -> int:
    reg = load_registry(args.registry)
    if args.json:
        for spec in reg.models.values():
            print(json.dumps(spec.to_dict(), ensure_ascii=False))
        return 0
    print(f"registry: {reg.path}")
    print(f"default pair: {reg.default_pair[0]} vs {reg.default_pair[1]}\n")
    width = max(len(n) for n in reg.models)
    for name, spec in reg.models.items():
        star = "*" if name in reg.default_pair else " "
        dtype = spec.dtype if spec.backend == "transformers" else "-"  # llama.cpp/remote: the file/server decides
        print(f"{star} {name:<{width}}  {spec.backend:<12} {dtype:<9} {spec.label}")
        print(f"  {'':<{width}}  source: {spec.source}")
    return 0
