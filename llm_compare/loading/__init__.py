"""One entry point for local weights: `load_model(spec) -> LoadedModel`.

What a source is (`source.py`) is decided before any loader runs; the loaders live beside this file.
"""

from __future__ import annotations

from llm_compare.loading.source import (EMBEDDED, LEGACY_TYPES, LoadedModel, Source,  # noqa: F401
                                        embedded_path, read_config, resolve_source)


def load_model(spec) -> LoadedModel:
    """Load a transformers-backend spec's weights, tokenizer and chat format onto the CPU."""
    source = resolve_source(spec.source)
    if source.kind in LEGACY_TYPES.values():  # a seed format: its family description says how to read it
        from llm_compare.loading.legacy import load_legacy  # reason: torch and transformers

        return load_legacy(source, spec)
    from llm_compare.loading.hf import load_hf  # reason: torch and transformers

    return load_hf(source, spec)
