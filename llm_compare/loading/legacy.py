"""The seed checkpoints (ChatGLM3-6B, Qwen-7B-Chat) loaded as native transformers models, no remote code.

Their original modeling code does not run on transformers 5, so each family's description
(`llm_compare/families/`) maps config.json to a native config and renames the stored tensors; this
module reads any such family: tokenizer first (a missing file fails before gigabytes are read), then
the weights one tensor at a time (`checkpoint.load_legacy_weights`), then the chat format.
"""

from __future__ import annotations

import time
from pathlib import Path

from llm_compare.chat_formats import choose_format
from llm_compare.families import family_of
from llm_compare.loading import LoadedModel, Source, read_config
from llm_compare.loading.checkpoint import load_legacy_weights
from llm_compare.machine import rss


def load_legacy_model(family, path: Path, spec):
    """(model, context length) without the tokenizer: the weight half of `load_legacy`."""
    config = family.native_config(read_config(path), path / "config.json")
    model = load_legacy_weights(path, spec, config, family.converter(config), family.generation(path), family.what)
    return model, config.max_position_embeddings


def load_legacy(source: Source, spec) -> LoadedModel:
    """A seed-format directory's model, tokenizer and native chat format, timed and measured."""
    family, path = family_of(source), Path(source.path)
    before, t0 = rss(), time.perf_counter()
    tokenizer = family.load_tokenizer(path)
    model, context = load_legacy_model(family, path, spec)
    fmt = choose_format(spec.chat_format, tokenizer, model.generation_config, native=family.chat_format(tokenizer))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        chat_format=fmt,
        context_length=context,
        load_seconds=time.perf_counter() - t0,
        resident_bytes=max(0, rss() - before),
        loader=family.kind,
    )
