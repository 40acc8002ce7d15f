"""The one size model: bytes of a model's weights at each GGUF type, and of its KV cache.

A model is a tensor table: llama.cpp's tensor names (`token_embd.weight`, `blk.N.attn_q.weight`, ...)
with GGUF's dimension order (innermost first, so `dims[0]` is the row length), read from a GGUF
header or built from a native config (`families.tensors.tensor_shapes`). A GGUF file's tensor data is each tensor's
elements at the ggml type it gets there (`tensor_types`): the exporter's write modes for f32 / f16,
and for q8_0 / q4_k_m the rules of llama.cpp's quantizer (`src/llama-quant.cpp`), which the
project's exports run. The RAM check, `doctor`, the export's disk check and the Architecture tab
all state this figure; tests/test_sizes.py checks it against files llama.cpp itself quantized.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from llm_compare.specs import GGUF_DTYPES, GGUF_KV_CACHE, is_gguf_dtype


@dataclass(frozen=True)
class GgmlType:
    """One ggml tensor type: its id in GGUF files, and its block (values, bytes)."""

    name: str
    id: int
    block: int
    block_bytes: int

    def bytes_for(self, values: int) -> int:
        return values // self.block * self.block_bytes


# ggml's type traits (ggml.c): every type a GGUF file may hold (ids 4, 5 were removed; 9, 15 are never stored)
_TYPES = (
    ("f32", 0, 1, 4), ("f16", 1, 1, 2), ("q4_0", 2, 32, 18), ("q4_1", 3, 32, 20), ("q5_0", 6, 32, 22),
    ("q5_1", 7, 32, 24), ("q8_0", 8, 32, 34), ("q2_k", 10, 256, 84), ("q3_k", 11, 256, 110),
    ("q4_k", 12, 256, 144), ("q5_k", 13, 256, 176), ("q6_k", 14, 256, 210), ("iq2_xxs", 16, 256, 66),
    ("iq2_xs", 17, 256, 74), ("iq3_xxs", 18, 256, 98), ("iq1_s", 19, 256, 50), ("iq4_nl", 20, 32, 18),
    ("iq3_s", 21, 256, 110), ("iq2_s", 22, 256, 82), ("iq4_xs", 23, 256, 136), ("i8", 24, 1, 1),
    ("i16", 25, 1, 2), ("i32", 26, 1, 4), ("i64", 27, 1, 8), ("f64", 28, 1, 8), ("iq1_m", 29, 256, 56),
    ("bf16", 30, 1, 2), ("tq1_0", 34, 256, 54), ("tq2_0", 35, 256, 66), ("mxfp4", 39, 32, 17),
)  # fmt: skip
GGML_TYPES = {name: GgmlType(name, *rest) for name, *rest in _TYPES}
GGML_IDS = {t.id: t for t in GGML_TYPES.values()}


def file_type(dtype: str) -> str:
    """The GGUF file type a gguf-* dtype names ("gguf-q4_k_m" -> "q4_k_m")."""
    return dtype.removeprefix("gguf-")


FILE_TYPES = tuple(map(file_type, GGUF_DTYPES))  # the GGUF types the project exports
BASE_TYPE = {"q8_0": "q8_0", "q4_k_m": "q4_k"}  # llama.cpp's default tensor type of each quantized file type
# llama.cpp's type for a row that is no whole number of blocks (f16 after that; for q8_0 it refuses to quantize)
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0", "q2_k": "q4_0", "q3_k": "q4_0"}
ATTN_V = ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")  # llama.cpp's attention-V-like tensors
LAYER = re.compile(r"blk\.(\d+)\.")
Q4_K_M_NOTE = (
    "q4_k_m follows llama.cpp's quantizer: matrices Q4_K; output.weight (the embeddings when tied), and "
    "attn_v / ffn_down in the first and last eighth of the layers and every third layer between, Q6_K; rows "
    "not a multiple of 256 fall back to Q5_0 / Q8_0; vectors stay f32"
)


def tensor_bytes(dims: tuple[int, ...], type_name: str) -> int:
    return GGML_TYPES[type_name].bytes_for(math.prod(dims))


def type_name(ggml_id: int) -> str:
    """ggml's name for a type id (Q4_K, F16, ...)."""
    known = GGML_IDS.get(ggml_id)
    return known.name.upper() if known else f"type {ggml_id}"


def layer_of(name: str) -> int:
    match = LAYER.match(name)
    return int(match.group(1)) if match else -1


def layer_count(table: dict) -> int:
    return max(map(layer_of, table), default=-1) + 1


def quantizable(name: str, dims: tuple[int, ...]) -> bool:
    """Whether llama.cpp's quantizer converts this tensor: matrices named *weight, norms excepted."""
    return len(dims) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's layers whose attn_v / ffn_down get Q6_K in the _M mixes: the first and last eighth, and
    every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fitted(wanted: str, row: int) -> str:
    """`wanted`, or what llama.cpp's quantizer falls back to when `row` is no whole number of its blocks."""
    for kind in (wanted, FALLBACK.get(wanted)):
        if kind and row % GGML_TYPES[kind].block == 0:
            return kind
    return "f16"


def tensor_types(table: dict[str, tuple[int, ...]], file_type: str) -> dict[str, str]:
    """Each tensor's ggml type in a GGUF file of `file_type` (FILE_TYPES) as the project writes it: the
    exporter keeps vectors f32 and writes matrices f32 or 16-bit; llama.cpp's quantizer then converts
    the matrices it quantizes, visiting them layer by layer (its counters for attn_v / ffn_down)."""
    order = [n for n in sorted(table, key=lambda n: (layer_of(n), n)) if quantizable(n, table[n])]
    attn_v = [n for n in order if n.endswith(ATTN_V)]
    ffn_down = [n for n in order if "ffn_down" in n]
    position = {n: (i, len(attn_v)) for i, n in enumerate(attn_v)}
    position |= {n: (i, layer_count(table)) for i, n in enumerate(ffn_down)}
    tied = "output.weight" not in table
    return {name: _type(name, dims, file_type, tied, position.get(name)) for name, dims in table.items()}


def _type(name: str, dims: tuple[int, ...], file_type: str, tied: bool, position) -> str:
    if file_type == "f32" or len(dims) < 2:
        return "f32"
    if file_type == "f16" or not quantizable(name, dims):
        return "f16"
    base = BASE_TYPE[file_type]
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        wanted = "q8_0" if base == "q8_0" or dims[0] % GGML_TYPES[base].block else "q6_k"
    elif file_type == "q4_k_m" and position and more_bits(*position):
        wanted = "q6_k"
    else:
        wanted = base
    return fitted(wanted, dims[0])


def gguf_bytes(table: dict[str, tuple[int, ...]], file_type: str) -> int:
    """Tensor data bytes of the table as a GGUF file of `file_type` (header and alignment excluded)."""
    types = tensor_types(table, file_type)
    return sum(tensor_bytes(dims, types[name]) for name, dims in table.items())


# -- KV cache --
TORCH_CACHE = {"float32": "f32", "float16": "f16"}  # transformers caches K and V in its compute dtype (else bf16)


def kv_cache_type(dtype: str, backend: str = "transformers", head_dim: int | None = None) -> str:
    """The ggml type K and V are cached in for a model at `dtype` on `backend`: an export's
    (specs.GGUF_KV_CACHE; f16 when a head is no whole number of its blocks), llama.cpp's default f16
    for a GGUF file as it is, else transformers' compute dtype (int8 weights compute in bfloat16)."""
    if is_gguf_dtype(dtype):
        kind = GGUF_KV_CACHE[dtype]
        return "f16" if head_dim and head_dim % GGML_TYPES[kind].block else kind
    if backend == "llamacpp":
        return "f16"
    return TORCH_CACHE.get(dtype, "bf16")


def kv_cache_bytes(values_per_token: int, tokens: int, cache_type: str) -> int:
    """K and V bytes of `tokens` tokens, `values_per_token` values each (all layers), in `cache_type`."""
    return GGML_TYPES[cache_type].bytes_for(values_per_token * tokens)
