"""The seed checkpoints (ChatGLM3-6B, Qwen-7B-Chat) loaded as native transformers models, no remote code.

Their original modeling code does not run on transformers 5, so each family's description
(`llm_compare/families/`) maps config.json to a native config and renames the stored tensors; this
module loads any such family (`source.assemble_legacy`: tokenizer first, then the weights one
tensor at a time through `checkpoint.load_legacy_weights`, then the chat format).
"""

from __future__ import annotations

from pathlib import Path

from llm_compare.families import family_of
from llm_compare.loading.checkpoint import load_legacy_weights
from llm_compare.loading.source import LoadedModel, Source, assemble_legacy, read_config


def load_legacy_model(family, path: Path, spec):
    """(model, context length) without the tokenizer: the weight half of `load_legacy`."""
    config = family.native_config(read_config(path), path / "config.json")
    model = load_legacy_weights(path, spec, config, family.converter(config), family.generation(path), family.what)
    return model, config.max_position_embeddings


def load_legacy(source: Source, spec) -> LoadedModel:
    """A seed-format directory's model, tokenizer and native chat format, timed and measured."""
    family = family_of(source)
    return assemble_legacy(Path(source.path), spec, load_tokenizer=family.load_tokenizer,
                           native_format=family.chat_format, loader=family.kind,
                           load_weights=lambda path, spec: load_legacy_model(family, path, spec))
