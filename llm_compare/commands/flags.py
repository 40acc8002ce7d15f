"""Flags shared by commands (and app.py): which two models, and the shared generation settings."""

from __future__ import annotations

from llm_compare.params import TUNABLE, GenerationParams, settings_from_input
from llm_compare.specs import DTYPES, CONTEXT_TOKENS, check_context, check_threads, load_registry


def add_model_args(p) -> None:
    p.add_argument(
        "--model-a", help="side A's model: registry name, model directory, .gguf file or server URL (default: registry pair)"
    )
    p.add_argument("--model-b", help="the same for side B")
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--dtype-a", choices=DTYPES, help="override side A's precision")
    p.add_argument("--dtype-b", choices=DTYPES, help="override side B's precision")
    p.add_argument("--threads-a", type=int, help="CPU threads for side A (default: thread policy)")
    p.add_argument("--threads-b", type=int, help="CPU threads for side B")
    p.add_argument("--context-a", type=int, help=f"llama.cpp: tokens of context side A reserves at load "
                   f"(default {CONTEXT_TOKENS}; Qwen-7B: 0.27 GiB per 1024 tokens in gguf-q4_k_m)")
    p.add_argument("--context-b", type=int, help="the same for side B")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow running Python code shipped in a model directory (off by default; only for authors you trust)",
    )


def check_model_args(args) -> None:
    """The model flags' values, refused the same way by the CLI and the app."""
    for side in ("a", "b"):
        check_threads(getattr(args, f"threads_{side}", None), f"--threads-{side}")
        check_context(getattr(args, f"context_{side}", None), f"--context-{side}")


def specs_from_args(args):
    """(spec_a, spec_b, registry) from the model flags."""
    check_model_args(args)
    reg = load_registry(getattr(args, "registry", None))
    specs = []
    for side in ("a", "b"):
        spec = reg.resolve(getattr(args, f"model_{side}", None), side)
        spec = spec.with_overrides(
            dtype=getattr(args, f"dtype_{side}", None),
            threads=getattr(args, f"threads_{side}", None),
            context=getattr(args, f"context_{side}", None),
            trust_remote_code=True if getattr(args, "trust_remote_code", False) else None,
        )
        specs.append(spec)
    return specs[0], specs[1], reg


def add_generation_args(p, max_new_tokens: int = 256) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (deterministic)")
    p.add_argument("--temperature", type=float, help="default: the model's recommended value, else 0.7")
    p.add_argument("--top-p", type=float, help="default: the model's recommended value, else 0.9")
    p.add_argument(
        "--repetition-penalty", type=float, help="default: the model's recommended value (e.g. Qwen-1's 1.1), else 1.0"
    )
    p.add_argument("--seed", type=int, help="sampling seed, 0 to 2**32-1 (each side samples from its own generator)")


def settings_from_args(args) -> tuple[GenerationParams, frozenset[str]]:
    """Shared settings and the tunable ones given as flags (the others: each model's recommendation)."""
    return settings_from_input(args.max_new_tokens, args.greedy, args.seed,
                               **{k: getattr(args, k, None) for k in TUNABLE})
