"""`open_backend(spec)`: the backend a spec names, loaded and ready to stream.

Each backend is imported when a spec needs it: transformers brings torch, llama.cpp its library.
"""

from __future__ import annotations

from llm_compare.backends.base import Backend, Chunk  # noqa: F401
from llm_compare.backends.llamacpp_exported import kv_cache_kwargs, text_side
from llm_compare.backends.openai import OpenAIBackend
from llm_compare.errors import UserError
from llm_compare.loading import load_model
from llm_compare.loading.source import resolve_source
from llm_compare.specs import is_gguf_dtype


def open_backend(spec, progress=None) -> Backend:
    """`progress(step, total, what)`: called while a gguf-* dtype is exported (minutes for a 7B model)."""
    if is_gguf_dtype(spec.dtype) and spec.backend != "openai":
        return open_exported(spec, progress)
    if spec.backend == "transformers":
        from llm_compare.backends.transformers import TransformersBackend  # reason: torch and transformers

        return TransformersBackend(spec, load_model(spec))
    if spec.backend == "llamacpp":
        from llm_compare.backends.llamacpp import LlamaCppBackend  # reason: torch

        return LlamaCppBackend(spec)
    if spec.backend == "openai":
        return OpenAIBackend(spec)
    raise UserError(f"model {spec.name!r}: unknown backend {spec.backend!r}")


def open_exported(spec, progress=None):
    """The backend for a model directory at a gguf-* dtype: the config and our tokenizer (read first,
    so a broken directory fails before any export), the cached or freshly exported GGUF, llama.cpp."""
    from llm_compare.backends.llamacpp import LlamaCppBackend  # reason: llama_cpp
    from llm_compare.loading.gguf.export import discard, exported_gguf, terminal_progress  # reason: torch
    from llm_compare.loading.gguf.plan import head_dim, plan_export  # reason: torch

    source = resolve_source(spec.source)
    plan = plan_export(source)  # refuses what the exporter does not cover, before anything is read
    text = text_side(source, spec)
    progress = progress or terminal_progress()
    kwargs = kv_cache_kwargs(spec.dtype, head_dim(plan.config))
    path = exported_gguf(source, spec.dtype, progress)
    try:
        return LlamaCppBackend(spec, path=path, text=text, open_kwargs=kwargs)
    except UserError as e:
        discard(path, f"llama.cpp could not load it ({e})")
        return LlamaCppBackend(spec, path=exported_gguf(source, spec.dtype, progress), text=text, open_kwargs=kwargs)
