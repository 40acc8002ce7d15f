"""Which reader describes a spec's source: config.json (native, or a seed format through its family's
own config mapping, `llm_compare/families/`) or a GGUF header, each into one set of native-named facts."""

from __future__ import annotations

from pathlib import Path

from llm_compare.architecture.legacy import legacy_config, read_legacy
from llm_compare.architecture.read import Reading, native_names, read_native_dir
from llm_compare.architecture.read_gguf import read_gguf
from llm_compare.errors import UserError
from llm_compare.families import family_of
from llm_compare.families.gguf_metadata import native_config as gguf_native_config
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.source import Source, read_config, resolve_source


def read_source(spec) -> Reading:
    """A Reading for a spec; UserError only when nothing at all can be read (bad path, not a model)."""
    if spec.backend == "openai" or spec.source.startswith(("http://", "https://")):
        return Reading("remote", "unknown", None, f"OpenAI-compatible server at {spec.source}", notes=[
            "a remote server exposes no config, tokenizer or weights: the architecture cannot be known from here"])
    source = resolve_for_facts(spec.source)
    if source.kind == "hub":
        return Reading("hub", "unknown", None, f"hub id {source.hub_id}", notes=[
            "a hub id is not read (no download): pass the downloaded model directory"])
    if source.kind == "gguf":
        return read_gguf(source.path)
    if renamed(source):
        return read_legacy(source)
    return read_native_dir(source.path, source.config)


def renamed(source) -> bool:
    """A seed-format directory, read through its family's renaming (architecture/legacy.py)."""
    family = family_of(source)
    return bool(family and family.renamed)


def resolve_for_facts(source_text: str):
    """`loading.resolve_source`, but a directory with a config.json and no weight files is still
    described (its config is all this needs)."""
    try:
        return resolve_source(source_text, check_sizes=False)  # impossible sizes are shown as invalid
    except UserError:
        path = Path(source_text).expanduser()
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise
        return Source("hf_dir", path, config=read_config(path))


def source_widths(source_text: str) -> tuple[int, int] | None:
    """(hidden, MLP width) of a model as the project loads it, from its config.json or GGUF header
    (no weights read), through the same config mappings as the architecture readers (Qwen-1's
    intermediate_size counts both halves of its gated MLP: the legacy mapping halves it).
    None when the source does not state both; UserError when nothing can be read."""
    source = resolve_for_facts(source_text)
    if source.kind == "gguf":
        cfg = gguf_native_config(check_gguf(source.path).metadata.get)[1]
    elif renamed(source):
        cfg = legacy_config(source)[0]
    else:
        raw = source.config or {}
        cfg = native_names(raw, raw.get("model_type"))
    hidden, mlp = cfg.get("hidden_size"), cfg.get("intermediate_size")
    return (hidden, mlp) if isinstance(hidden, int) and isinstance(mlp, int) else None
