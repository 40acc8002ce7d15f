"""A model's weight tensors as one table, whatever it was read from, and what that table implies.

A GGUF header lists its tensors; a config.json describes them. Both become the same table in
llama.cpp's tensor names (`token_embd.weight`, `blk.N.attn_q.weight`, ... with GGUF's dimension
order, innermost first), so parameter counts per part and file sizes at each GGUF type come out of
one function for every source. Nothing here reads weights.
"""

from __future__ import annotations

import math
import re

from llm_compare.loading.gguf.header import BLOCKS
from llm_compare.specs import GGUF_DTYPES

PARTS = ("embeddings", "attention", "mlp", "norms", "output_head")
BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# the ggml types a GGUF export uses, by name: their block sizes are loading.gguf.BLOCKS
GGML_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q5_0": 6, "q8_0": 8, "q4_k": 12, "q6_k": 14}
# what llama.cpp's quantizer uses when a row is not a whole number of blocks
FALLBACK = {"q4_k": "q5_0", "q6_k": "q8_0", "q8_0": "f16", "q5_0": "f16"}
GGUF_TYPES = tuple(d.removeprefix("gguf-") for d in GGUF_DTYPES)  # the GGUF export types the project offers
Q4_K_M_NOTE = (
    "q4_k_m is an estimate of llama.cpp's recipe: matrices Q4_K (144 B per 256 weights); output.weight, "
    "and attn_v / ffn_down in the first and last eighth of the layers and every third layer between, Q6_K "
    "(210 B per 256); rows not a multiple of 256 fall back to Q5_0 / Q8_0; 1-D tensors stay f32"
)


def llama_shaped(shape: dict) -> dict[str, tuple[int, ...]]:
    """The tensor table of a llama-shaped decoder (gated MLP, RMSNorm, grouped-query attention).

    `shape` holds native config values: vocab_size, hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim and the booleans
    qkv_bias, o_bias, mlp_bias, qk_norm, tied.
    """
    hidden, inter, head_dim = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv = shape["num_attention_heads"] * head_dim, shape["num_key_value_heads"] * head_dim
    table = {"token_embd.weight": (hidden, shape["vocab_size"]), "output_norm.weight": (hidden,)}
    if not shape.get("tied"):
        table["output.weight"] = (hidden, shape["vocab_size"])
    for i in range(shape["num_hidden_layers"]):
        blk = f"blk.{i}."
        table.update({blk + "attn_norm.weight": (hidden,), blk + "ffn_norm.weight": (hidden,),
                      blk + "attn_q.weight": (hidden, q), blk + "attn_k.weight": (hidden, kv),
                      blk + "attn_v.weight": (hidden, kv), blk + "attn_output.weight": (q, hidden),
                      blk + "ffn_gate.weight": (hidden, inter), blk + "ffn_up.weight": (hidden, inter),
                      blk + "ffn_down.weight": (inter, hidden)})
        if shape.get("qkv_bias"):
            table.update({blk + "attn_q.bias": (q,), blk + "attn_k.bias": (kv,), blk + "attn_v.bias": (kv,)})
        if shape.get("o_bias"):
            table[blk + "attn_output.bias"] = (hidden,)
        if shape.get("mlp_bias"):
            table.update({blk + "ffn_gate.bias": (inter,), blk + "ffn_up.bias": (inter,),
                          blk + "ffn_down.bias": (hidden,)})
        if shape.get("qk_norm"):
            table.update({blk + "attn_q_norm.weight": (head_dim,), blk + "attn_k_norm.weight": (head_dim,)})
    return table


def part_of(name: str) -> str:
    """Which part of the model a tensor belongs to (llama.cpp tensor names)."""
    if name.startswith("token_embd"):
        return "embeddings"
    if name.startswith("output."):
        return "output_head"
    if "norm" in name:
        return "norms"
    match = BLOCK.fullmatch(name)
    if match and match.group(2).startswith("attn"):
        return "attention"
    if match and match.group(2).startswith("ffn"):
        return "mlp"
    return "other"


def part_counts(table: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Parameters per part, and "total" (a tensor shared by two parts is listed once in a table)."""
    counts = dict.fromkeys(PARTS, 0)
    for name, dims in table.items():
        if name.startswith("rope_freqs"):  # precomputed rotary factors: a buffer, not a parameter
            continue
        part = part_of(name)
        counts[part] = counts.get(part, 0) + math.prod(dims)
    counts["total"] = sum(counts.values())
    return counts


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get more bits in the _M mixes."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_type(name: str, dims: tuple[int, ...], gguf_type: str, layers: int) -> str:
    """The block type a tensor gets at `gguf_type` (q4_k_m per the recipe in Q4_K_M_NOTE)."""
    if len(dims) < 2 or gguf_type == "f32":
        return "f32"
    if gguf_type != "q4_k_m":
        wanted = gguf_type
    elif name == "output.weight":
        wanted = "q6_k"
    else:
        match = BLOCK.fullmatch(name)
        more = match and match.group(2) in ("attn_v", "ffn_down") and use_more_bits(int(match.group(1)), layers)
        wanted = "q6_k" if more else "q4_k"
    while dims[0] % block_of(wanted)[0]:
        wanted = FALLBACK[wanted]
    return wanted


def block_of(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type."""
    return BLOCKS[GGML_TYPES[type_name]]


def gguf_bytes(table: dict[str, tuple[int, ...]], gguf_type: str, layers: int) -> int:
    """Tensor bytes of the table written as a GGUF file of `gguf_type` (header excluded)."""
    total = 0
    for name, dims in table.items():
        block_weights, block_bytes = block_of(tensor_type(name, dims, gguf_type, layers))
        total += math.prod(dims) // block_weights * block_bytes
    return total


def layer_count(table: dict[str, tuple[int, ...]]) -> int:
    blocks = {int(m.group(1)) for m in map(BLOCK.fullmatch, table) if m}
    return max(blocks) + 1 if blocks else 0
