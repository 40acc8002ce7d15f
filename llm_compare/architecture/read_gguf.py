"""A GGUF file's architecture from its header: metadata keys and the tensor table, no tensor data.

The header comes from `loading/gguf/header.py` (the one GGUF header reader; it also checks the file is
complete). llama.cpp's keys (`{arch}.block_count`, `{arch}.attention.head_count_kv`, ...) are renamed
to the native config names the other sources use by `families/gguf_metadata.py` (head_dim and KV
heads by llama.cpp's own defaults when absent, noted); anything else absent stays "not stated".
"""

from __future__ import annotations

from pathlib import Path

from llm_compare.architecture.read import GATED_ACTS, Reading, hf_tokenizer, rope_facts, valid_sizes, with_format
from llm_compare.families.gguf_metadata import native_config
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.gguf.unpack import VOCAB_KEYS, byte_level_tokenizer, not_covered
from llm_compare.loading.size_model import type_name

# the activation of llama.cpp's graph for these architectures (none of them stores it in the header)
ACTIVATIONS = {"llama": "silu", "qwen2": "silu", "qwen3": "silu", "mistral": "silu", "glm4": "silu",
               "chatglm": "silu", "phi3": "silu", "gemma": "gelu_pytorch_tanh", "gemma2": "gelu_pytorch_tanh"}
TOKENIZER_KINDS = {"gpt2": "byte-level BPE", "llama": "SentencePiece BPE", "bert": "WordPiece",
                   "t5": "SentencePiece Unigram"}


def transformers_class_for(arch: str) -> str | None:
    """The transformers class that unpacks a GGUF of this architecture, None when transformers cannot."""
    try:
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return None
    if arch not in GGUF_CONFIG_MAPPING:
        return None
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(arch)


def read_gguf(path: Path) -> Reading:
    header = check_gguf(path)  # a cut or foreign file: the project's one-line message
    meta = header.metadata
    arch, cfg, derived = native_config(meta.get)
    notes = [f"{key} not stated in the header: llama.cpp uses {cfg[key]}"
             + (" (embedding_length / head_count)" if key == "head_dim" else " (one KV head per head)")
             for key in derived]
    cfg, invalid = valid_sizes(cfg, notes, "the GGUF header")
    table = {t.name: t.dims for t in header.tensors}
    untied = "output.weight" in table
    file_types = {"bytes": sum(t.nbytes() or 0 for t in header.tensors),
                  "read_bytes": sum(t.nbytes() or 0 for t in header.tensors
                                    if not (untied and t.name == "token_embd.weight")),
                  "types": sorted({type_name(t.ggml_type) for t in header.tensors})}
    facts = {k: cfg.get(k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                     "num_attention_heads", "num_key_value_heads", "head_dim")}
    embd = table.get("token_embd.weight")
    facts["vocab_size"] = embd[1] if embd and len(embd) == 2 else None
    facts.update(gguf_structure(meta, arch, cfg, table, facts))
    name = meta.get("general.name")
    cls = transformers_class_for(arch)
    via = (f"GGUF unpacked by transformers ({cls})" if cls else
           "llama.cpp only: transformers cannot unpack this GGUF architecture")
    notes.insert(0, f"read from the GGUF header ({', '.join(file_types['types'])} tensors); context_length is "
                 "the header's training context")
    facts["invalid"] = invalid
    reading = Reading("gguf", f"{arch}" + (f" ({name})" if name else ""), cls, via, config=facts, table=table,
                      file_types=file_types, notes=notes, path=path)
    reading.load_tokenizer = lambda: gguf_tokenizer(path)
    reading.config["tokenizer_kind"] = TOKENIZER_KINDS.get(meta.get("tokenizer.ggml.model"))
    return reading


def gguf_structure(meta: dict, arch: str, cfg: dict, table: dict, shape: dict) -> dict:
    """Norm, activation, biases, tying and rope facts a GGUF states (or its tensor names show)."""
    out = {}
    eps_rms, eps_ln = cfg.get("rms_norm_eps"), cfg.get("layer_norm_eps")
    out["norm_type"] = "RMSNorm" if eps_rms is not None else "LayerNorm" if eps_ln is not None else None
    out["norm_eps"] = eps_rms if eps_rms is not None else eps_ln
    act = ACTIVATIONS.get(arch)
    gated = "blk.0.ffn_gate.weight" in table
    out["activation"] = (GATED_ACTS.get(act, f"gated {act}") if gated else act) if act else None
    out["tied_embeddings"] = "output.weight" not in table if "token_embd.weight" in table else None
    out["qkv_bias"] = "blk.0.attn_q.bias" in table if "blk.0.attn_q.weight" in table else None
    out["context_length"] = out["trained_context_length"] = cfg.get("max_position_embeddings")
    rope = rope_facts({"rope_theta": cfg.get("rope_theta")})
    out["rope_theta"] = rope["rope_theta"]
    dims, head_dim = meta.get(f"{arch}.rope.dimension_count"), shape.get("head_dim")
    out["rope_fraction"] = dims / head_dim if isinstance(dims, int) and head_dim else None
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling:
        factor = meta.get(f"{arch}.rope.scaling.factor")
        out["rope_scaling"] = f"{scaling}" + (f" ×{factor}" if factor else "")
        out["trained_context_length"] = meta.get(f"{arch}.rope.scaling.original_context_length")
    else:
        out["rope_scaling"] = "none"
    return out


def gguf_tokenizer(path: Path):
    """The tokenizer the transformers backend would use (the converted copy in the cache when there is
    one; else built from the header like the fast conversion does, or by transformers for what that
    does not cover), and its chat-template format."""
    from llm_compare.loading.gguf.cache import gguf_cache_dir  # reason: torch and transformers

    cached = gguf_cache_dir(path)
    if (cached / "complete").exists():
        return hf_tokenizer(cached)
    header = check_gguf(path, VOCAB_KEYS)
    if not_covered(header) is not None:
        return hf_tokenizer(path.parent, gguf_file=path.name)
    return with_format(byte_level_tokenizer(header))
