"""The seed formats (ChatGLM3-6B, Qwen-7B-Chat) read through the legacy loaders' own config mapping.

`glm_config` / `qwen2_config` are what the loaders build the native model from, so the facts here
are the ones the loaded model has, in the native vocabulary. A variant those mappings refuse is
still described from its raw config.json, with the refusal as a note.
"""

from __future__ import annotations

from llm_compare.architecture.read import Reading, shape_facts, table_for
from llm_compare.errors import UserError
from llm_compare.loading.legacy_chatglm3 import glm_config
from llm_compare.loading.legacy_qwen import qwen2_config
from llm_compare.loading.tokenizer_chatglm3 import ChatGLM3Format, load_chatglm3_tokenizer
from llm_compare.loading.tokenizer_qwen import QwenFormat, load_qwen_tokenizer

FAMILIES = {"chatglm3": ("ChatGLM3 (GLM, decoder-only)", "GlmForCausalLM", "glm"),
            "qwen": ("Qwen-1 (decoder-only)", "Qwen2ForCausalLM", "qwen2")}
RAW_KEYS = {  # native key: raw key, for configs the mapping refuses
    "chatglm3": {"vocab_size": "padded_vocab_size", "hidden_size": "hidden_size",
                 "intermediate_size": "ffn_hidden_size", "num_hidden_layers": "num_layers",
                 "num_attention_heads": "num_attention_heads", "head_dim": "kv_channels",
                 "max_position_embeddings": "seq_length"},
    "qwen": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_hidden_layers",
             "num_attention_heads": "num_attention_heads", "head_dim": "kv_channels",
             "max_position_embeddings": "seq_length"},
}


def native_config(kind: str, raw: dict, where):
    """The native transformers config the legacy loader would build (UserError when it refuses)."""
    if kind == "chatglm3":
        return glm_config(raw, where)
    return qwen2_config(raw, where)


def qwen_long_context(raw: dict) -> list[str]:
    """Qwen-1's run-time context extension, which lives in the original code, not in rope settings."""
    tricks = [name for key, name in (("use_dynamic_ntk", "dynamic NTK"), ("use_logn_attn", "log-n attention"))
              if raw.get(key)]
    return tricks


def legacy_config(source) -> tuple[dict, UserError | None]:
    """The native config (as a dict) the legacy loader builds from a seed config.json; for a variant
    it refuses, the raw values under native names, and the refusal."""
    try:
        return native_config(source.kind, source.config, source.path / "config.json").to_dict(), None
    except UserError as e:
        return {native: source.config.get(key) for native, key in RAW_KEYS[source.kind].items()}, e


def read_legacy(source) -> Reading:
    family, cls, model_type = FAMILIES[source.kind]
    raw = source.config
    notes: list[str] = []
    cfg, refused = legacy_config(source)
    via = f"legacy remap ({source.kind} config.json → {cls}; no remote code)"
    if refused:
        cls, via = None, "not loadable natively"
        notes.append(str(refused))
    if source.kind == "qwen" and cfg.get("head_dim") is None:
        cfg["head_dim"] = raw.get("kv_channels")  # Qwen2Config derives it; Qwen-1 states it here
    facts = shape_facts(cfg, model_type, notes)
    if source.kind == "qwen":
        tricks = qwen_long_context(raw)
        if tricks:
            facts["rope_scaling"] = f"{' + '.join(tricks)} beyond seq_length (original code only)"
            notes.append(f"Qwen-1's {' and '.join(tricks)} extend the context past seq_length "
                         f"{raw.get('seq_length')} at run time; the native loader caps the context there")
    reading = Reading(source.kind, family, cls, via, config=facts,
                      table=table_for(facts, cfg, model_type) if cls else None, notes=notes, path=source.path)
    reading.load_tokenizer = lambda: legacy_tokenizer(source.kind, source.path)
    return reading


def legacy_tokenizer(kind: str, path):
    """The native tokenizer and the original chat() format of a seed checkpoint (no weights read)."""
    if kind == "chatglm3":
        tokenizer = load_chatglm3_tokenizer(path)
        return tokenizer, ChatGLM3Format(tokenizer)
    tokenizer = load_qwen_tokenizer(path)
    return tokenizer, QwenFormat(tokenizer)
