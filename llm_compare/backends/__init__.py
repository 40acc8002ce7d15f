"""`open_backend(spec)`: the backend a spec names, loaded and ready to stream."""

from __future__ import annotations

from llm_compare.backends.base import Backend, Chunk  # noqa: F401
from llm_compare.errors import UserError


def open_backend(spec) -> Backend:
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
