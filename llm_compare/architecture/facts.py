"""One model's architecture facts as one flat dict with stable keys (`describe`).

The CLI's `--json`, the Architecture tab and the report's table all show this dict. A value is
None when it is not known; `missing[key]` then says why: "not stated" (the config or header read
does not say it) or "unknown" (nothing was read that could say it, e.g. a remote server).
"""

from __future__ import annotations

import logging

from llm_compare.architecture import sizes, tensors
from llm_compare.architecture.read import Reading
from llm_compare.architecture.sources import read_source
from llm_compare.architecture.tokens import tokenizer_facts
from llm_compare.errors import UserError
from llm_compare.loading.memory import count_parameters, weight_bytes
from llm_compare.loading.size_model import Q4_K_M_NOTE

log = logging.getLogger(__name__)

CONFIG_KEYS = (
    "layers", "hidden_size", "attention_heads", "kv_heads", "head_dim", "qkv_bias", "ffn_size", "activation",
    "norm_type", "norm_eps", "tied_embeddings", "rope_theta", "rope_fraction", "rope_scaling", "context_length",
    "trained_context_length", "vocab_size",
)  # fmt: skip
DERIVED_KEYS = (
    "attention_kind", "kv_groups", "params_total", "params_embeddings", "params_attention", "params_mlp",
    "params_norms", "params_output_head", "weights_bytes", "file_bytes", "kv_cache_bytes_per_token",
    "kv_cache_bytes_full_context", "memory_bandwidth_bytes_per_s", "decode_ceiling_tokens_per_s",
)  # fmt: skip
TOKENIZER_KEYS = (
    "tokenizer_kind", "tokenizer_vocab_size", "embedding_padding_rows", "special_tokens", "special_token_count",
    "chat_format", "first_turn_tokens", "seed_prompt_tokens", "tokens_per_char_seed_prompts",
    "chars_per_token_seed_prompts", "tokens_per_char_english", "chars_per_token_english",
)  # fmt: skip
KEYS = ("name", "label", "source", "family", "transformers_class", "runs_as", "decoder_only",
        *CONFIG_KEYS, *DERIVED_KEYS, *TOKENIZER_KEYS)
NATIVE_NAMES = {"layers": "num_hidden_layers", "attention_heads": "num_attention_heads",
                "kv_heads": "num_key_value_heads", "ffn_size": "intermediate_size"}
CONFIG_NAMES = NATIVE_NAMES | {"context_length": "max_position_embeddings"}  # fact -> the config key it shows


def attention_kind(heads, kv_heads) -> tuple[str | None, int | None]:
    """MHA / GQA with its group count / MQA."""
    if not isinstance(heads, int) or not isinstance(kv_heads, int) or kv_heads <= 0:
        return None, None
    if kv_heads == heads:
        return "MHA", kv_heads
    if kv_heads == 1:
        return "MQA", 1
    return f"GQA ({kv_heads} KV groups of {heads // kv_heads} heads)", kv_heads


def structure(reading: Reading) -> dict:
    cfg = reading.config
    out = {key: cfg.get(NATIVE_NAMES.get(key, key)) for key in CONFIG_KEYS}
    out["attention_kind"], out["kv_groups"] = attention_kind(out["attention_heads"], out["kv_heads"])
    decoder = reading.transformers_class and reading.transformers_class.endswith("ForCausalLM")
    out["decoder_only"] = True if decoder else None
    return out


def memory_facts(reading: Reading, out: dict, bandwidth: float | None) -> dict:
    """Parameters per part, weights per precision, KV cache and the decode ceiling."""
    facts = {"kv_cache_bytes_per_token": sizes.kv_cache_bytes_per_token(out["layers"], out["kv_heads"],
                                                                        out["head_dim"])}
    if facts["kv_cache_bytes_per_token"] and isinstance(out["context_length"], int):
        facts["kv_cache_bytes_full_context"] = facts["kv_cache_bytes_per_token"] * out["context_length"]
    if reading.file_types:
        facts["file_bytes"] = reading.file_types["bytes"]
    if reading.table is None:
        return facts | other_class_totals(reading)
    counts = tensors.part_counts(reading.table)
    facts["params_total"] = counts["total"]
    facts.update({f"params_{part}": counts[part] for part in tensors.PARTS})
    facts["weights_bytes"] = sizes.weights_by_precision(reading.table)
    facts["memory_bandwidth_bytes_per_s"] = bandwidth
    read_bytes = sizes.bytes_read_per_token(reading.table)
    if reading.file_types:
        facts["weights_bytes"]["this file"] = reading.file_types["bytes"]
        read_bytes["this file"] = reading.file_types["read_bytes"]
    facts["decode_ceiling_tokens_per_s"] = sizes.decode_ceilings(read_bytes, bandwidth)
    return facts


def other_class_totals(reading: Reading) -> dict:
    """Total and bf16 / int8 sizes of a transformers class tensors.py does not describe, counted
    on the meta device (no memory) by `loading.memory.count_parameters`; {} when it cannot."""
    if not reading.raw:
        return {}
    try:
        count = count_parameters(reading.raw)
    except UserError:
        return {}
    return {"params_total": count.total,
            "weights_bytes": {name: weight_bytes(count, dtype) for name, dtype in sizes.TORCH_PRECISIONS.items()}}


def describe(spec, bandwidth: float | None = None) -> dict:
    """Every fact about `spec`'s architecture that its files state, weights never read.

    Raises UserError only when nothing at all can be read (a path that is not a model).
    `bandwidth`: bytes/s for the decode ceiling (None: no ceiling).
    """
    reading = read_source(spec)
    out = {"name": spec.name, "label": spec.label, "source": spec.source, "family": reading.family,
           "transformers_class": reading.transformers_class, "runs_as": reading.via}
    if spec.backend == "llamacpp" and reading.kind == "gguf":
        out["runs_as"] = "llama.cpp, from the GGUF file as is"
    out.update(structure(reading))
    out.update(memory_facts(reading, out, bandwidth))
    out["tokenizer_kind"] = reading.config.get("tokenizer_kind")
    notes = list(reading.notes)
    if reading.load_tokenizer is not None:
        try:
            out.update({k: v for k, v in tokenizer_facts(reading.load_tokenizer).items() if v is not None})
        except UserError as e:
            notes.append(f"tokenizer: {e}")
        except Exception as e:  # noqa: BLE001 - an odd tokenizer must not hide the rest of the facts
            log.info("tokenizer of %s", spec.source, exc_info=True)
            notes.append(f"tokenizer not readable ({type(e).__name__}: {e})")
    if isinstance(out.get("vocab_size"), int) and isinstance(out.get("tokenizer_vocab_size"), int):
        out["embedding_padding_rows"] = out["vocab_size"] - out["tokenizer_vocab_size"]
    if out["kv_cache_bytes_per_token"] is None and reading.kind in ("remote", "hub"):
        notes.append("KV cache and decode ceiling unknown: no layer or head counts could be read")
    return finish(out, reading, notes)


def finish(out: dict, reading: Reading, notes: list[str]) -> dict:
    """Every key present; `missing` says for each None whether the source is silent or unread."""
    read_config = reading.kind not in ("remote", "hub")  # a config.json or a GGUF header was read
    invalid = reading.config.get("invalid") or {}
    missing = {}
    for key in KEYS:
        out.setdefault(key, None)
        if out[key] is None:
            missing[key] = invalid.get(CONFIG_NAMES.get(key, key)) or (
                "not stated" if read_config and key in CONFIG_KEYS else "unknown")
    out["missing"] = missing
    out["notes"] = notes
    if "gguf-q4_k_m" in (out.get("weights_bytes") or {}):
        out["notes"].append(Q4_K_M_NOTE)
    return {key: out[key] for key in (*KEYS, "missing", "notes")}
