"""llama.cpp's GGUF metadata keys under native transformers config names: the one mapping every GGUF
reader uses (the Architecture tab, the fast GGUF -> transformers conversion, the size checks).

Defaults follow llama.cpp's own loader (`llama_model::load_hparams`): a head is
`attention.key_length` wide when the header says so, else embedding_length / head_count, and
`attention.head_count_kv` defaults to head_count. (`rope.dimension_count` is the rotated width,
which is not the head width when only part of each head is rotated.)
"""

from __future__ import annotations

from typing import Callable

KEYS = {  # native config key: llama.cpp metadata key after "{arch}."
    "num_hidden_layers": "block_count",
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
    "head_dim": "attention.key_length",
    "rms_norm_eps": "attention.layer_norm_rms_epsilon",
    "layer_norm_eps": "attention.layer_norm_epsilon",
    "rope_theta": "rope.freq_base",
    "max_position_embeddings": "context_length",
    "vocab_size": "vocab_size",
}
DERIVED = ("head_dim", "num_key_value_heads")  # filled by llama.cpp's defaults when absent


def native_config(metadata: Callable[[str], object]) -> tuple[str, dict, tuple[str, ...]]:
    """(architecture, native config values, which of them llama.cpp's defaults supplied);
    `metadata(key)` is a header value or None. Absent keys without a default are left out."""
    arch = metadata("general.architecture") or "unknown"
    cfg = {native: metadata(f"{arch}.{key}") for native, key in KEYS.items()}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    derived = []
    if isinstance(heads, int) and heads > 0:
        if "num_key_value_heads" not in cfg:
            cfg["num_key_value_heads"], derived = heads, [*derived, "num_key_value_heads"]
        if "head_dim" not in cfg and isinstance(hidden, int):
            cfg["head_dim"], derived = hidden // heads, [*derived, "head_dim"]
    return arch, cfg, tuple(derived)


def rotary_dims(metadata: Callable[[str], object]) -> int | None:
    """How many dimensions of each head rope rotates (`rope.dimension_count`), None when unstated."""
    arch = metadata("general.architecture") or "unknown"
    value = metadata(f"{arch}.rope.dimension_count")
    return value if isinstance(value, int) else None
