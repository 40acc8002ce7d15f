"""Stored tensor names -> native transformers names, for checkpoints laid out as the original code
lays them out (the seed formats): the converter a family description hands to the loader and the
exporter. Plain Python on the names; the tensors are only split, so no torch is imported here."""

from __future__ import annotations

import re
from typing import Callable


def renaming_converter(renames: dict, layer: re.Pattern, layer_renames: dict, fused_qkv: str,
                       split_qkv: Callable, drop=()) -> Callable:
    """The legacy layouts' common shape: whole-model renames, per-layer renames (`layer` matches a
    layer's tensors as (index, rest)), and one fused q/k/v tensor per layer (`fused_qkv`.weight/.bias)
    that `split_qkv` cuts into q, k, v rows (None when the rows do not add up: assign() then reports
    the mismatch). Names in `drop` are left out; any other name is unknown (None)."""

    def convert(name, tensor):
        if name in renames:
            return [(renames[name], tensor)]
        if name in drop:
            return []
        match = layer.fullmatch(name)
        if not match:
            return None
        i, rest = match.groups()
        prefix = f"model.layers.{i}."
        if rest in layer_renames:
            return [(prefix + layer_renames[rest], tensor)]
        base, _, kind = rest.rpartition(".")
        if base != fused_qkv or kind not in ("weight", "bias"):
            return None
        parts = split_qkv(tensor)
        if parts is None:
            return [(prefix + f"self_attn.qkv_proj.{kind}", tensor)]
        return [(prefix + f"self_attn.{p}_proj.{kind}", t) for p, t in zip("qkv", parts)]

    return convert
