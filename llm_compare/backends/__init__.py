"""`open_backend(spec)`: the backend a spec names, loaded and ready to stream."""

from __future__ import annotations

from llm_compare.backends.base import Backend, Chunk  # noqa: F401
from llm_compare.errors import UserError
from llm_compare.specs import is_gguf_dtype


def open_backend(spec, progress=None) -> Backend:
    """`progress(step, total, what)`: called while a gguf-* dtype is exported (minutes for a 7B model)."""
    if is_gguf_dtype(spec.dtype) and spec.backend != "openai":
        from llm_compare.backends.llamacpp_exported import open_exported

        return open_exported(spec, progress)
    if spec.backend == "transformers":
        from llm_compare.backends.transformers import TransformersBackend
        from llm_compare.loading import load_model

        return TransformersBackend(spec, load_model(spec))
    if spec.backend == "llamacpp":
        from llm_compare.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(spec)
    if spec.backend == "openai":
        from llm_compare.backends.openai import OpenAIBackend

        return OpenAIBackend(spec)
    raise UserError(f"model {spec.name!r}: unknown backend {spec.backend!r}")
