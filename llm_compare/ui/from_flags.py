"""Flags -> the shared `AppContext` -> the Blocks, plus the launch settings that go with them."""

from __future__ import annotations

import gradio as gr

from llm_compare.loading.gguf.cache import convert_in_background
from llm_compare.pool import ModelPool
from llm_compare.presets import load_presets
from llm_compare.specs import MAX_UPLOAD_BYTES, load_registry
from llm_compare.store import open_store
from llm_compare.ui.layout import CSS, build_app
from llm_compare.ui.session import AppContext


def context_from_args(args) -> AppContext:
    """Everything the callbacks share; bad flags (unknown model, broken registry) raise UserError here."""
    registry = load_registry(args.registry)
    ctx = AppContext(
        registry=registry,
        pool=ModelPool(max_resident=1 if args.one_model_at_a_time else None),
        one_at_a_time=args.one_model_at_a_time,
        trust_remote_code=args.trust_remote_code,
        presets=load_presets(),
        store=None if args.no_votes else open_store(args.db),
        model_a=args.model_a,
        model_b=args.model_b,
        threads={"a": args.threads_a, "b": args.threads_b},
        dtypes={"a": args.dtype_a, "b": args.dtype_b},
        contexts={"a": args.context_a, "b": args.context_b},
    )
    for side in ("a", "b"):  # fail at startup, not at the first Send
        ctx.spec(getattr(args, f"model_{side}"), side)
    return ctx


def create_app(args) -> tuple[gr.Blocks, dict]:
    ctx = context_from_args(args)
    convert_in_background([ctx.spec(args.model_a, "a"), ctx.spec(args.model_b, "b")])  # one-time work, before Send
    demo = build_app(ctx, concurrency=args.concurrency)
    # max_file_size: Gradio's upload route is open to anyone who reaches the app (without --auth)
    return demo, {"css": CSS, "theme": app_theme(), "footer_links": ["api", "gradio"],
                  "max_file_size": MAX_UPLOAD_BYTES}


def app_theme():
    """Gradio's Soft theme with local fonts (CJK included; nothing fetched). Font objects, not strings:
    `launch()` compares the theme with its built-in ones (for its usage statistics, on by default) and
    crashed on plain strings."""
    fonts = [gr.themes.Font(name) for name in ("ui-sans-serif", "system-ui", "Noto Sans CJK SC", "sans-serif")]
    return gr.themes.Soft(font=fonts, font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("monospace")])
