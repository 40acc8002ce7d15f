"""A model's weight tensors as one table, whatever it was read from, and what that table implies.

A GGUF header lists its tensors; a config.json describes them (`families.tensors.tensor_shapes`).
Both become the same table in llama.cpp's tensor names (`token_embd.weight`, `blk.N.attn_q.weight`,
... with GGUF's dimension order, innermost first), so parameter counts per part come out of one
function for every source, as file sizes do (`loading.size_model`). Nothing here reads weights.
"""

from __future__ import annotations

import math
import re

PARTS = ("embeddings", "attention", "mlp", "norms", "output_head")
BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


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
