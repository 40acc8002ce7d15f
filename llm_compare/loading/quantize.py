"""The torch dtype each precision loads in (`torch_dtype`), and int8 weight-only quantization:
`quantize_int8(model)` swaps every nn.Linear for `Int8Linear`.

Two 6–7B models in bfloat16 do not fit a 24 GiB machine together; int8 weights halve the linear
layers (sizes: `memory.weight_bytes`). Loaders read bfloat16 weights and quantize afterwards,
freeing each 16-bit weight as soon as its int8 copy exists, so the load peaks near the bfloat16 size.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The dtype weights are loaded in; int8 loads bfloat16 then quantizes the linear layers."""
    return TORCH_DTYPES.get(name, torch.bfloat16)


QUANT_ROWS = 256  # rows quantized at a time


class Int8Linear(torch.nn.Module):
    """A Linear layer with int8 weights and one bfloat16 scale per output row (symmetric).

    bfloat16 inputs whose width is a multiple of 16 go through torch's fused CPU kernel
    (`torch._weight_int8pack_mm`: the weight is read once, as int8; 1.35× bfloat16's decode
    speed on SmolLM2, 1.55× at the seeds' widths); anything else dequantises the weight on the
    fly (correct, but slower than float32).
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        q = torch.empty(weight.shape, dtype=torch.int8)
        scales = torch.empty(weight.shape[0], dtype=torch.bfloat16)
        for start in range(0, weight.shape[0], QUANT_ROWS):  # row blocks: float32 temporaries stay small
            w = weight[start : start + QUANT_ROWS].to(torch.float32, copy=True)
            s = (w.abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
            q[start : start + QUANT_ROWS] = w.div_(s.float()[:, None]).round_().clamp_(-127, 127)
            scales[start : start + QUANT_ROWS] = s
        self.register_buffer("qweight", q)
        self.register_buffer("scales", scales)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.fused = hasattr(torch, "_weight_int8pack_mm") and self.in_features % 16 == 0

    def forward(self, x):
        shape = x.shape
        if self.fused and x.dtype == torch.bfloat16:
            x2 = x.reshape(-1, self.in_features)
            if not x2.is_contiguous() or x2.data_ptr() % 64:  # the kernel uses aligned loads
                x2 = x2.clone(memory_format=torch.contiguous_format)
            y = torch._weight_int8pack_mm(x2, self.qweight, self.scales).reshape(*shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        weight = self.qweight.to(x.dtype) * self.scales.to(x.dtype)[:, None]
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, fused={self.fused}"


def quantize_int8(model, include_lm_head: bool = False):
    """Replace the model's nn.Linear layers by int8 ones in place (weight-only; activations bf16).

    Embeddings stay bfloat16, and so does lm_head unless `include_lm_head` (often tied to the
    embeddings, and the logits are what a comparison shows). Returns the model.
    """
    for param in model.parameters():  # compute in bf16; buffers (rotary inv_freq) keep their precision
        if param.dtype != torch.bfloat16 and param.is_floating_point():
            param.data = param.data.to(torch.bfloat16)
    keep = set() if include_lm_head else {id(model.get_output_embeddings())}
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and id(m) not in keep]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(linear))
        linear.weight = None  # free the 16-bit weight now, not at the end: keeps the load peak low
    release_freed_memory()
    return model


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS. glibc keeps freed blocks below its mmap threshold (up
    to 32 MB): without this, a checkpoint of 2.9 MB layers loaded as int8 stayed resident at more
    than its bf16 size (tests/test_legacy_weights.py, the larger load test)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
