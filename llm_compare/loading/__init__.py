"""One entry point for local weights: `load_model(spec) -> LoadedModel`.

What a source is (`source.py`) is decided before any loader runs; the loaders live beside this file.
"""

from __future__ import annotations

from llm_compare.loading.source import (EMBEDDED, LoadedModel, Source, embedded_path,  # noqa: F401
                                        read_config, resolve_source)


def load_model(spec) -> LoadedModel:
    """Load a transformers-backend spec's weights, tokenizer and chat format onto the CPU."""
    source = resolve_source(spec.source)
    if source.kind == "chatglm3":
        from llm_compare.loading.legacy_chatglm3 import load_chatglm3  # reason: torch and transformers

        return load_chatglm3(source.path, spec)
    if source.kind == "qwen":
        from llm_compare.loading.legacy_qwen import load_qwen  # reason: torch and transformers

        return load_qwen(source.path, spec)
    from llm_compare.loading.hf import load_hf  # reason: torch and transformers

    return load_hf(source, spec)
