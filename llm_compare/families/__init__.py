"""One description per model family: how its config.json maps to the native transformers config,
how its stored tensors are renamed, its tokenizer, chat format and generation defaults, and its
llama.cpp architecture (`family.Family`). Code that needs any of these asks `family_of(source)`
instead of testing which family a source is.

The seed formats (ChatGLM3-6B, Qwen-7B-Chat) and plain transformers directories are the families;
GGUF files and hub ids are not model directories and have none.
"""

from __future__ import annotations

from llm_compare.families import chatglm3, native, qwen1
from llm_compare.families.family import Family
from llm_compare.loading.source import LEGACY_TYPES

FAMILIES = {f.kind: f for f in (chatglm3.FAMILY, qwen1.FAMILY, native.FAMILY)}


def family_of(source) -> Family | None:
    """The family of a resolved `loading.Source` (or its kind), None for a GGUF file or a hub id."""
    return FAMILIES.get(getattr(source, "kind", source))


def family_for_config(raw: dict) -> Family:
    """The family that reads a config.json dict (the seed formats by their model_type, else native)."""
    return FAMILIES[LEGACY_TYPES.get(raw.get("model_type"), "hf_dir")]
