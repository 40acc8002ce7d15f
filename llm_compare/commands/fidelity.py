"""How closely model B follows reference model A, token by token (top-1 agreement, KL divergence, perplexity)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm_compare import progress
from llm_compare.commands.flags import specs_from_args
from llm_compare.errors import UserError
from llm_compare.fidelity import merged, presets_fidelity, text_fidelity
from llm_compare.fidelity_view import table_lines
from llm_compare.pool import ModelPool
from llm_compare.presets import load_suite
from llm_compare.specs import DTYPES


def configure(p):
    p.add_argument("a", help="reference model A: registry name, model directory or .gguf file")
    p.add_argument("b", help="model B, compared with A (same tokenizer): e.g. the same model at another precision")
    p.add_argument("--text", metavar="FILE", help="score this UTF-8 text file (no chat format) instead of the presets "
                   "answered by A")
    p.add_argument("--prompts", default="seeds", help="preset group or TOML file A answers (default: seeds)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="length of A's greedy answers (default 128)")
    p.add_argument("--system", help="system prompt for both models")
    p.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--dtype-a", choices=DTYPES, help="override A's precision")
    p.add_argument("--dtype-b", choices=DTYPES, help="override B's precision")
    p.add_argument("--context-a", type=int, help="llama.cpp: tokens of context A reserves at load")
    p.add_argument("--context-b", type=int, help="the same for B")


def read_text(path: str) -> str:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as e:
        raise UserError(f"cannot read --text {path}: {e.strerror or e}; pass an existing UTF-8 text file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--text {path} is not UTF-8 text; save it as UTF-8") from None


def progress_line(stream=None, width: int = 24):
    """A `progress(done, total, what)` callback drawing one updating line on a terminal (silent when piped)."""
    stream = stream or sys.stderr

    def show(done: float, total: int, what: str) -> None:
        if not stream.isatty():
            return
        filled = int(width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done:.1f}/{total} {what[:50]}"
        stream.write("\r" + line.ljust(100)[:100])
        stream.flush()

    return show


def run(args) -> int:
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1 (got {args.max_new_tokens})")
    text = read_text(args.text) if args.text else None
    suite, presets = (None, None) if text is not None else load_suite(args.prompts)
    args.model_a, args.model_b = args.a, args.b
    spec_a, spec_b, _ = specs_from_args(args)
    pool = ModelPool()
    backends = {}
    for side, spec in (("a", spec_a), ("b", spec_b)):
        with progress.reporting(lambda line, side=side: sys.stderr.isatty() and print(
                f"{side.upper()}: {line}", file=sys.stderr, flush=True)):
            backends[side] = pool.get(spec)
    a, b = backends["a"], backends["b"]
    show = progress_line()
    if text is not None:
        parts = text_fidelity(a, b, text, Path(args.text).name, progress=show)
    else:
        parts = presets_fidelity(a, b, presets, args.max_new_tokens, args.system, progress=show)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    overall = merged(parts)
    if args.json:
        print(json.dumps({"a": spec_a.label, "b": spec_b.label, "scored": "text" if text is not None else suite,
                          "overall": overall.to_dict(), "parts": [p.to_dict() for p in parts]}, ensure_ascii=False))
    else:
        print(f"A (reference): {spec_a.label}\nB: {spec_b.label}")
        print("\n".join(table_lines(parts, overall)))
    return 0
