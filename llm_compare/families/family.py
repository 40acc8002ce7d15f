"""What one model family is, as data and small functions: the shape every description in
`llm_compare/families/` fills in, and that the loaders, the exporter, the memory estimate, the
Architecture tab and the exported backend read instead of asking which family a source is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# native model_type -> llama.cpp architecture name (the exporter covers these)
LLAMACPP_ARCHES = {"llama": "llama", "qwen2": "qwen2", "glm": "chatglm"}


def no_notes(raw: dict) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    kind: str  # the `loading.Source.kind` of its model directories
    title: str  # the family as the Architecture tab names it
    loader: str  # how the project reads it, as `doctor` says
    what: str  # names it in messages ("a plain {what} checkpoint")
    native_type: str | None  # the native transformers model_type it becomes (None: whatever config.json says)
    native_class: str | None  # the native transformers class it runs as (None: config.json's)
    # config.json as a dict -> the native transformers config, with the defaults for optional fields;
    # UserError for a variant the native class does not reproduce
    native_config: Callable[[dict, Path], object]
    # native config -> (stored tensor name, tensor) -> [(native name, tensor)], [] drops it, None: unknown
    converter: Callable[[object], Callable]
    load_tokenizer: Callable[[Path], object]
    chat_format: Callable[[object], object] | None  # tokenizer -> its own chat format (None: the chat template)
    generation: Callable[[Path], dict | None]  # GenerationConfig fields (None: generation_config.json as is)
    vocab: str  # which GGUF vocabulary the exporter writes for it: "chatglm3" | "qwen" | "hf"
    renamed: bool  # True: loaded through `converter` (loading/legacy.py); False: by transformers itself
    raw_keys: dict = field(default_factory=dict)  # native key: config.json key, to describe refused variants
    long_context: Callable[[dict], list[str]] = no_notes  # run-time context tricks native classes lack

    def llamacpp_arch(self, raw: dict) -> str | None:
        """llama.cpp's architecture for a config.json of this family, None when the exporter has none."""
        return LLAMACPP_ARCHES.get(self.native_type or raw.get("model_type"))
