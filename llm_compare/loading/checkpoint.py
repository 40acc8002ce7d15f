"""Reading a checkpoint's weight shards safely, one tensor at a time, into a native model.

Why this exists: the legacy loaders (ChatGLM3, Qwen-1) cannot use `from_pretrained` because
their tensors need renaming and splitting. So this module does the three things
`from_pretrained` would otherwise do for us, in the safest way available:

- `find_shards` picks ONE weight format (safetensors when present, else `.bin`), and checks the
  index and every shard's structure before any model is built, so a missing, truncated or
  corrupt file is a one-line `UserError` naming that file, not a traceback halfway through.
- `.bin` shards are read with `torch.load(weights_only=True, mmap=True)`: the pickle may hold
  tensors only, so a hostile file cannot run code. Nothing in the directory is ever imported.
- `load_checkpoint` builds the model on the meta device (no memory) and assigns each converted
  tensor as it is read, so peak memory is the model plus one source tensor, not two models.
  On failure nothing half-loaded stays referenced, not even by the exception's traceback.
"""

from __future__ import annotations

import json
import pickle
import struct
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from llm_compare.errors import UserError
from llm_compare.loading.quantize import quantize_int8, torch_dtype

# (source name, tensor) -> [(native name, tensor), ...]; [] drops the tensor, None: unknown name
Converter = Callable[[str, torch.Tensor], "list[tuple[str, torch.Tensor]] | None"]  # families/renames.py builds them
REDOWNLOAD = "re-download it from the model's original repository"


@dataclass(frozen=True)
class Shards:
    """The weight files of one checkpoint, in one format."""

    format: str  # "safetensors" | "bin"
    files: tuple[Path, ...]
    index: Path | None = None
    weight_map: dict | None = None  # tensor name -> file name, from the index


def read_index(index: Path) -> dict:
    """The index's weight_map, checked to be a {tensor name: file name} table."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"shard index {index} is not readable JSON ({e}); {REDOWNLOAD}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"shard index {index} has no weight_map table; {REDOWNLOAD}")
    for name, file in weight_map.items():
        if not isinstance(file, str) or not file or Path(file).name != file:
            raise UserError(f"shard index {index} maps {name} to {file!r}, which is not a file name; {REDOWNLOAD}")
    return weight_map


def find_shards(directory: Path) -> Shards:
    """The checkpoint's shards: safetensors if any exist, else `.bin`; never a mix."""
    directory = Path(directory)
    for fmt, index_name, single, pattern in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors", "model*.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch_model*.bin"),
    ):
        index = directory / index_name
        if index.is_file():
            weight_map = read_index(index)
            files = tuple(directory / f for f in sorted(set(weight_map.values())))
            for f in files:
                if not f.is_file():
                    raise UserError(
                        f"shard {f.name} named in {index.name} is missing from {directory}; download it"
                    )
            shards = Shards(fmt, files, index, weight_map)
        elif (directory / single).is_file():
            shards = Shards(fmt, (directory / single,))
        else:
            files = tuple(sorted(p for p in directory.glob(pattern) if p.is_file()))
            if not files:
                continue
            shards = Shards(fmt, files)
        for f in shards.files:
            check_shard(f, fmt)
        return shards
    raise UserError(
        f"{directory} has no weight files (model*.safetensors or pytorch_model*.bin); download the weights too"
    )


def check_shard(path: Path, fmt: str) -> None:
    """Cheap structural check (header and length, or zip directory) without reading tensor data."""
    size = path.stat().st_size
    if fmt == "safetensors":
        with path.open("rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise UserError(f"shard {path} is truncated or not a safetensors file; {REDOWNLOAD}")
            try:
                header = json.loads(f.read(n))
                end = max(
                    (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
                )
            except (ValueError, TypeError, KeyError, IndexError):
                raise UserError(f"shard {path} has a corrupt safetensors header; {REDOWNLOAD}") from None
        if 8 + n + end != size:
            raise UserError(
                f"shard {path} is truncated or corrupt: {size} bytes on disk, its header says "
                f"{8 + n + end}; {REDOWNLOAD}"
            )
    elif not zipfile.is_zipfile(path):
        raise UserError(
            f"shard {path} is truncated or not a PyTorch zip checkpoint; {REDOWNLOAD}, "
            "or use a safetensors copy of the checkpoint"
        )


def read_shard(path: Path, fmt: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of one shard; tensors are mmap-backed views, valid until the next shard."""
    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except SafetensorError as e:
            raise UserError(f"shard {path} is corrupt ({e}); {REDOWNLOAD}") from None
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"shard {path} holds Python objects besides tensors and was refused, since loading it "
            f"could run code ({str(e).splitlines()[0][:120]}); use a safetensors copy of the checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0][:120]
        raise UserError(f"shard {path} is truncated or corrupt ({reason}); {REDOWNLOAD}") from None
    if not isinstance(state, dict):
        raise UserError(f"shard {path} is not a state dict (it holds a {type(state).__name__}); {REDOWNLOAD}")
    while state:
        name, tensor = state.popitem()
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"shard {path}: entry {name} is not a tensor; {REDOWNLOAD}")
        yield name, tensor
        del tensor


def assign(model: nn.Module, name: str, tensor: torch.Tensor, dtype: torch.dtype, origin: Path, source: str):
    """Put an owned, dtype-converted copy of `tensor` in place of the meta parameter `name`."""
    module_name, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        module = None
    current = getattr(module, "_parameters", {}).get(leaf)
    if current is None:
        raise UserError(f"shard {origin} has tensor {source}, which this model does not have; {REDOWNLOAD}")
    if not current.is_meta:
        raise UserError(f"tensor {source} appears twice (again in shard {origin}); {REDOWNLOAD}")
    if not tensor.is_floating_point():
        raise UserError(
            f"shard {origin}: tensor {source} is {tensor.dtype}, not floating point (a pre-quantized "
            "checkpoint?); use the original full-precision checkpoint"
        )
    if tuple(tensor.shape) != tuple(current.shape):
        raise UserError(
            f"shard {origin}: tensor {source} has shape {tuple(tensor.shape)} where config.json implies "
            f"{tuple(current.shape)} for {name}; the weights do not match config.json"
        )
    # copy=True: the model owns its memory instead of pinning the mmap'd shard file
    module._parameters[leaf] = nn.Parameter(tensor.to(dtype=dtype, copy=True), requires_grad=False)


def materialize_buffers(model: nn.Module) -> None:
    """Rebuild modules whose non-persistent buffers are still on meta (the rotary embeddings)."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            if not hasattr(module, "inv_freq"):
                raise RuntimeError(f"{name} has meta buffers and is not a rotary embedding")
            with torch.device("cpu"):
                fresh = type(module)(config=module.config)
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, fresh)


def fill(model: nn.Module, shards: Shards, convert: Converter, dtype: torch.dtype, what: str) -> None:
    for path in shards.files:
        seen = []
        for source_name, tensor in read_shard(path, shards.format):
            seen.append(source_name)
            parts = convert(source_name, tensor)
            if parts is None:
                raise UserError(
                    f"shard {path} has tensor {source_name}, which a plain {what} checkpoint does not have "
                    "(quantized, adapter and other variants are not supported); "
                    "use the original full-precision checkpoint"
                )
            for name, part in parts:
                assign(model, name, part, dtype, path, source_name)
            del tensor
        if shards.weight_map:
            listed = {k for k, f in shards.weight_map.items() if f == path.name}
            absent = sorted(listed - set(seen))
            if absent:
                raise UserError(
                    f"shard {path} lacks {len(absent)} tensor(s) that {shards.index.name} lists there "
                    f"(e.g. {absent[0]}); {REDOWNLOAD}"
                )
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise UserError(
            f"the weights in {shards.files[0].parent} lack {len(missing)} tensor(s) the config needs "
            f"(e.g. {missing[0]}); download every shard"
        )
    materialize_buffers(model)


def load_checkpoint(directory: Path, config, convert: Converter, dtype: torch.dtype, what: str) -> nn.Module:
    """A native causal LM for `config` with the directory's weights, renamed by `convert`, in eval mode.

    `convert(source_name, tensor)` returns (native_name, tensor) pairs, [] for a tensor to drop,
    None for a name it does not know.
    """
    from transformers import AutoModelForCausalLM

    shards = find_shards(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        fill(model, shards, convert, dtype, what)
    except BaseException as e:
        # the traceback's frames would keep the half-filled model alive as long as the error lives
        model = None
        traceback.clear_frames(e.__traceback__)
        raise
    model.eval()
    return model


def load_legacy_weights(directory: Path, spec, config, convert: Converter, generation: dict, what: str):
    """The legacy loaders' shared path: weights at spec.dtype (int8: bf16 then quantized), and a
    generation_config holding the checkpoint's own defaults (`generation`)."""
    from transformers import GenerationConfig

    model = load_checkpoint(directory, config, convert, torch_dtype(spec.dtype), what)
    model.generation_config = GenerationConfig(**generation)
    if spec.dtype == "int8":
        quantize_int8(model)
    return model
