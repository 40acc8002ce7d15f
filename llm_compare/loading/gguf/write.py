"""Writing one GGUF file from an `ExportPlan`, tensor by tensor, and quantizing it with llama.cpp.

Two passes over the shards in the same order: the first records each tensor's name, shape and
type (the GGUF header comes before the data), the second converts and writes one tensor at a
time. Peak memory is one source shard's mapping plus one tensor in float32, never a second copy
of the model. Quantized types are made by llama.cpp's own `llama_model_quantize` from a 16-bit
intermediate file, so the quantization is llama.cpp's.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from llm_compare.errors import UserError
from llm_compare.loading.gguf.plan import ExportPlan, check_supported, entries, export_context, write_hparams
from llm_compare.loading.gguf.vocab import vocab_for

Progress = Callable[[int, int, str], None]  # (step done, steps in all, what is happening)
# how the written tensors are stored: f32 everything; f16 matrices (vectors stay f32); "source":
# matrices in their checkpoint's 16-bit type (the lossless input for llama.cpp's quantizer)
WRITE_MODES = ("f32", "f16", "source")
FILE_TYPES = {"f32": 0, "f16": 1, "source": 1}  # llama.cpp's general.file_type (ALL_F32, MOSTLY_F16)


def storage(mode: str, tensor: torch.Tensor) -> str:
    """"F32", "F16" or "BF16" for one tensor under a write mode."""
    if mode == "f32" or tensor.dim() < 2:
        return "F32"
    if mode == "source" and tensor.dtype == torch.bfloat16:
        return "BF16"
    return "F16"


def as_numpy(tensor: torch.Tensor, kind: str) -> np.ndarray:
    """One tensor's bytes for the file (a fresh contiguous copy in the target type)."""
    if kind == "F32":
        return tensor.to(torch.float32).contiguous().numpy()
    if kind == "F16":
        return tensor.to(torch.float16).contiguous().numpy()
    return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)


def write_gguf(plan: ExportPlan, path: Path, mode: str, progress: Progress | None = None) -> None:
    """Write the whole model to `path` (the caller picks a temporary name and renames it)."""
    import gguf

    check_supported(plan)
    vocab = vocab_for(plan.family.vocab, plan.directory)
    vocab.pad_to(plan.config.vocab_size)
    writer = gguf.GGUFWriter(str(path), plan.arch)
    try:
        writer.add_name(plan.directory.name)
        writer.add_file_type(FILE_TYPES[mode])
        write_hparams(writer, plan, export_context(plan.config))
        vocab.write(writer)
        planned = []
        for entry in entries(plan):
            kind = storage(mode, entry.tensor)
            itemsize = 4 if kind == "F32" else 2
            raw = gguf.GGMLQuantizationType.BF16 if kind == "BF16" else None
            dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[kind]
            writer.add_tensor_info(entry.name, tuple(entry.tensor.shape), np.dtype(dtype),
                                   entry.tensor.numel() * itemsize, raw_dtype=raw)
            planned.append((entry.name, kind))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = len(planned)
        for done, entry in enumerate(entries(plan), 1):
            name, kind = planned[done - 1]
            if entry.name != name:  # the shards changed between the two passes
                raise UserError(f"{plan.directory} changed while it was being exported; start again")
            writer.write_tensor_data(as_numpy(entry.data(), kind))
            del entry
            if progress:
                progress(done, total, f"writing {name}")
        writer.flush()
        os.fsync(writer.fout[0].fileno())
    finally:
        writer.close()


LLAMA_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def quantize(source: Path, target: Path, kind: str, threads: int | None = None) -> None:
    """llama.cpp's quantizer: `source` (16-bit GGUF) -> `target` at `kind` ("q8_0", "q4_k_m")."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_FTYPES[kind])
    params.nthread = threads or os.cpu_count() or 1
    with suppress_stdout_stderr(disable=False):  # llama.cpp prints a line per tensor; we report progress
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise UserError(f"llama.cpp could not quantize {source.name} to {kind} (status {status}); "
                        "try dtype gguf-f16 or gguf-f32")
