"""The seed formats (ChatGLM3-6B, Qwen-7B-Chat) read through their family's own config mapping.

`family.native_config` is what the loader builds the native model from, so the facts here are the
ones the loaded model has, in the native vocabulary. A variant that mapping refuses is still
described from its raw config.json (the family's `raw_keys`), with the refusal as a note.
"""

from __future__ import annotations

from llm_compare.architecture.read import Reading, shape_facts, table_for
from llm_compare.errors import UserError
from llm_compare.families import family_of


def legacy_config(source) -> tuple[dict, object | None, UserError | None]:
    """(native config as a dict, the native config, None) as the loader builds it from a seed
    config.json; for a variant it refuses, (the raw values under native names, None, the refusal)."""
    family = family_of(source)
    try:
        native = family.native_config(source.config, source.path / "config.json")
    except UserError as e:
        return {native: source.config.get(key) for native, key in family.raw_keys.items()}, None, e
    return native.to_dict(), native, None


def read_legacy(source) -> Reading:
    family, raw = family_of(source), source.config
    notes: list[str] = []
    cfg, native, refused = legacy_config(source)
    cls, via = family.native_class, f"legacy remap ({source.kind} config.json → {family.native_class}; no remote code)"
    if refused:
        cls, via = None, "not loadable natively"
        notes.append(str(refused))
    facts = shape_facts(cfg, family.native_type, notes, native)
    tricks = family.long_context(raw)
    if tricks:
        facts["rope_scaling"] = f"{' + '.join(tricks)} beyond seq_length (original code only)"
        notes.append(f"{family.what}'s {' and '.join(tricks)} extend the context past seq_length "
                     f"{raw.get('seq_length')} at run time; the native loader caps the context there")
    reading = Reading(source.kind, family.title, cls, via, config=facts, table=table_for(native), notes=notes,
                      path=source.path)
    reading.load_tokenizer = lambda: legacy_tokenizer(family, source.path)
    return reading


def legacy_tokenizer(family, path):
    """The native tokenizer and the original chat() format of a seed checkpoint (no weights read)."""
    tokenizer = family.load_tokenizer(path)
    return tokenizer, family.chat_format(tokenizer)
