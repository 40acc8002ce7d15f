"""Memory figures from a tensor table: weights at each precision, KV cache, the decode-speed ceiling.

bf16 / int8 sizes are `loading.memory.weight_bytes` (what the transformers backend holds); GGUF
sizes are the size model's (`loading.size_model.gguf_bytes`, llama.cpp's quantizer rules). Decoding
one token reads every weight once except the embedding table, of which it reads one row (a tied table
is read whole as the output head), so the ceiling is bandwidth / those bytes, KV cache not counted
(the start of a reply).
"""

from __future__ import annotations

from llm_compare.loading.memory import count_table, weight_bytes
from llm_compare.loading.size_model import FILE_TYPES, gguf_bytes, kv_cache_bytes

KV_CACHE = "f16"  # the table's KV row: a 16-bit cache (transformers bf16, llama.cpp f16; exports: specs.GGUF_KV_CACHE)
TORCH_PRECISIONS = {"bf16": "bfloat16", "int8": "int8"}


def weights_by_precision(table: dict) -> dict[str, int]:
    """Bytes of the weights at bf16 and int8 (transformers) and at each GGUF export type."""
    count = count_table(table)
    out = {name: weight_bytes(count, dtype) for name, dtype in TORCH_PRECISIONS.items()}
    out.update({f"gguf-{t}": gguf_bytes(table, t) for t in FILE_TYPES})
    return out


def bytes_read_per_token(table: dict) -> dict[str, int]:
    """Weight bytes one decode step reads, per precision (the embedding table excluded unless tied)."""
    untied = "output.weight" in table
    body = {k: v for k, v in table.items() if not (untied and k == "token_embd.weight")}
    return weights_by_precision(body)


def kv_cache_bytes_per_token(layers, kv_heads, head_dim) -> int | None:
    """K and V of every layer for one token in a 16-bit cache."""
    if not all(isinstance(v, int) for v in (layers, kv_heads, head_dim)):
        return None
    return kv_cache_bytes(2 * layers * kv_heads * head_dim, 1, KV_CACHE)


def decode_ceilings(read_bytes: dict[str, int], bandwidth: float | None) -> dict[str, float] | None:
    """tokens/s that `bandwidth` allows at each precision."""
    if not bandwidth:
        return None
    return {name: bandwidth / n for name, n in read_bytes.items() if n}
