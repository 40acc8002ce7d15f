"""Compare models' architectures from their config, tokenizer and GGUF header (no weights loaded)."""

from __future__ import annotations

import json

from llm_compare.architecture import describe_many
from llm_compare.architecture.table import render_text
from llm_compare.errors import UserError
from llm_compare.specs import ModelSpec, load_registry


def configure(p):
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="registry names, model directories, .gguf files or server URLs (default: the registry pair)")
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--json", action="store_true", help="one JSON object per model, stable keys")
    p.add_argument("--no-bandwidth", action="store_true",
                   help="skip the memory-bandwidth probe (no decode ceiling); it runs once per machine and is cached")


def run(args) -> int:
    reg = load_registry(args.registry)
    names = args.models or list(reg.default_pair)
    specs = [ModelSpec(name=n, source=n) if n.startswith("embedded:") else reg.resolve(n) for n in names]
    facts = describe_many(specs, measure_bandwidth=not args.no_bandwidth)
    unreadable = [f for f in facts if "error" in f]
    if unreadable:  # nothing at all could be read of this model: say which, one line
        first = unreadable[0]
        raise UserError(f"{first['name']}: {first['error']}")
    if args.json:
        for f in facts:
            print(json.dumps(f, ensure_ascii=False))
    else:
        print(render_text(facts), end="")
    return 0
