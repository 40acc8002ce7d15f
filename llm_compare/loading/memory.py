"""Will it fit? Size estimates from config.json alone, and the RAM check before a load.

Two 6–7B models in bfloat16 need ≈ 28 GB and do not fit a 24 GiB machine together, so the app
checks before it reads any weights and tells the user which option fits (int8 weights, or one
model resident at a time). Estimates come from the config (no weights are read):

    resident = weights + RUNTIME_OVERHEAD + KV cache (specs.CONTEXT_TOKENS tokens in transformers;
               the context llama.cpp reserves at load, `llamacpp_context`, in its cache type)

weights: parameters × bytes per parameter in transformers; under int8 the linear layers inside the
blocks take 1 byte per weight plus one bfloat16 scale per output row, while embeddings, lm_head,
norms and biases stay bfloat16. The loaders read bfloat16 weights and quantize afterwards, so an
int8 load briefly peaks at the bfloat16 size: `Estimate.peak_bytes` is what `check_fits` compares.
A GGUF file is its own size; a gguf-* export is the size model's (size_model.gguf_bytes: each tensor
at the type llama.cpp's quantizer gives it). KV bytes: size_model.kv_cache_bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from llm_compare.errors import UserError
from llm_compare.families import family_for_config
from llm_compare.families.tensors import covers, head_dim, tensor_shapes
from llm_compare.loading.gguf.header import check_gguf, trained_context
from llm_compare.loading.gguf.plan import exported_context
from llm_compare.loading.size_model import file_type, gguf_bytes, kv_cache_bytes, kv_cache_type
from llm_compare.loading.source import Source, resolve_source
from llm_compare.specs import CONTEXT_TOKENS, check_shape, is_gguf_dtype, reserved_context

GiB = 1024**3
MiB = 1024**2
RUNTIME_OVERHEAD = 256 * MiB  # activations, allocator slack, tokenizer: measured 0.1–0.2 GiB on tiny models
APP_BYTES = 512 * MiB  # the app process before any model (≈ 314 MiB measured) plus margin
SKIP_ENV = "LLM_COMPARE_NO_MEMORY_CHECK"
DTYPE_FALLBACKS = ("float32", "bfloat16", "int8")  # each needs less than the one before (float16 = bfloat16)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # per parameter in transformers


@dataclass(frozen=True)
class ParamCount:
    """Parameters split by what int8 does to them."""

    linear: int  # weights of the nn.Linear layers inside the decoder blocks (int8 candidates)
    linear_rows: int  # their output rows: one bfloat16 scale each
    other: int  # embeddings, lm_head, norms, biases: stay 16-bit under int8
    kv_per_token: int = 0  # K and V values cached per token, all layers
    head_dim: int = 0  # 0: not known
    table: dict | None = field(default=None, compare=False, repr=False)  # the tensor table (size_model), when known

    @property
    def total(self) -> int:
        return self.linear + self.other


@dataclass(frozen=True)
class Estimate:
    params: int
    weights_bytes: int
    resident_bytes: int  # weights + overhead + KV cache: what stays in RAM while it answers
    peak_bytes: int  # the highest point during the load
    kv_bytes: int = 0  # the KV cache counted in resident_bytes (a whole context: saved_caches_budget's unit)


def weight_bytes(count: ParamCount, dtype: str) -> int:
    """Bytes of the weights at `dtype`: transformers' precisions, or a gguf-* export's tensor data."""
    if is_gguf_dtype(dtype):
        if count.table is None:
            raise UserError(f"cannot size a {dtype} export of this model: its tensors are not known; "
                            "use dtype float32, bfloat16, float16 or int8")
        return gguf_bytes(count.table, file_type(dtype))
    if dtype == "int8":
        return count.linear + 2 * count.linear_rows + 2 * count.other
    return int(BYTES.get(dtype, 2) * count.total)


def count_parameters(config: dict) -> ParamCount:
    """Parameters from a config.json dict, through its family's mapping to the native config (the one
    the loader builds) and that config's tensor table; other architectures transformers knows are
    built on the meta device and counted. UserError for a size no model has or a refused variant."""
    check_shape(config)
    family = family_for_config(config)
    if not (family.renamed or covers(config.get("model_type"))):
        return _count_on_meta(config)
    native = family.native_config(config, Path("config.json"))
    return count_table(dict(tensor_shapes(native)), head_dim(native))


def _count_on_meta(config: dict) -> ParamCount:
    """Any other architecture transformers knows: build it on the meta device (no memory) and count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - any failure here only means "size unknown"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = reason if len(reason) <= 120 else reason[:117] + "..."
        raise UserError(
            f"cannot size model type {config.get('model_type')!r} from its config ({reason}); "
            "check config.json, or set LLM_COMPARE_NO_MEMORY_CHECK=1 and load it anyway"
        ) from None
    linear = rows = 0
    skip = {id(model.get_output_embeddings())}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module) not in skip:
            linear, rows = linear + module.weight.numel(), rows + module.out_features
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(linear=linear, linear_rows=rows, other=total - linear)


def gguf_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a GGUF header (checked against the file size; no data read)."""
    return {t.name: t.dims for t in check_gguf(path).tensors}


def count_gguf(path: Path) -> ParamCount:
    """Parameters of a GGUF file from its tensor table (the dense size transformers unpacks it to)."""
    return count_table(gguf_tensor_shapes(path))


def count_table(shapes: dict[str, tuple[int, ...]], head_dim: int = 0) -> ParamCount:
    """Parameters of a tensor table in llama.cpp names and GGUF dimension order ([in, out])."""
    linear = rows = other = kv = 0
    for name, dims in shapes.items():
        n = _product(dims)
        if name.startswith("blk.") and name.endswith(".weight") and len(dims) == 2:
            linear, rows = linear + n, rows + dims[1]  # GGUF lists dims innermost first: [in, out]
            kv += 2 * dims[1] if name.endswith(".attn_k.weight") else 0  # K and V rows per token
        else:
            other += n
    return ParamCount(linear=linear, linear_rows=rows, other=other, kv_per_token=kv, head_dim=head_dim, table=shapes)


def _product(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def estimate(source_or_config, dtype: str = "bfloat16", backend: str = "transformers",
             context: int | None = None) -> Estimate | None:
    """Estimate for a config dict, a model path / source string, or None when unknowable (hub, remote).
    `context`: a llama.cpp model's KV cache in tokens (ModelSpec.context; capped by `llamacpp_context`)."""
    if backend == "openai":
        return None
    source = _as_source(source_or_config)
    if source.kind == "hub":
        return None
    reserved = llamacpp_context(source, dtype, backend, context)
    if source.kind == "gguf":
        count = count_gguf(source.path)
        if reserved is not None:  # llama.cpp maps the file as is, plus its KV cache
            size = source.path.stat().st_size
            kv = kv_cache_bytes(count.kv_per_token, reserved, kv_cache_type(dtype, "llamacpp"))
            return Estimate(count.total, size, size + RUNTIME_OVERHEAD + kv, size + RUNTIME_OVERHEAD + kv, kv)
        return _estimate_count(count, dtype, backend)
    return _estimate_count(count_parameters(source.config), dtype, backend, reserved)


def _as_source(source_or_config):
    """A resolved source; a config dict stands for a directory holding it (no path: nothing else is read)."""
    if isinstance(source_or_config, dict):
        return Source(family_for_config(source_or_config).kind, None, config=source_or_config)
    return resolve_source(str(source_or_config))


def llamacpp_context(source, dtype: str, backend: str, context: int | None) -> int | None:
    """Tokens of KV cache llama.cpp reserves for `source` at `dtype` on `backend` (None: llama.cpp does
    not run it): the model's `context`, capped at the context the GGUF file states (a .gguf file) or the
    export will state (a directory at a gguf-* dtype): the one rule for the RAM check, `doctor` and loading."""
    if source.kind == "gguf" and (backend == "llamacpp" or is_gguf_dtype(dtype)):
        return reserved_context(context, trained_context(source.path))
    if is_gguf_dtype(dtype):
        return reserved_context(context, exported_context(source))
    return None


SAVED_CONTEXTS = 4  # full contexts of KV cache a model may keep for conversations waiting their turn
SAVED_SHARE = 0.25  # ... but never more than this share of the RAM free after loading it


def saved_caches_budget(context_kv_bytes: int, free: int) -> int:
    """Bytes of saved conversation caches a loaded model keeps (backends/kv_states.py): SAVED_CONTEXTS
    full contexts of its KV cache (a few sessions of a class arena, a report beside a chat), at most
    SAVED_SHARE of the RAM left free (all of that share when the KV size is unknown: 0); each kept
    cache spares re-reading its conversation."""
    share = int(free * SAVED_SHARE)
    return max(0, min(SAVED_CONTEXTS * context_kv_bytes, share) if context_kv_bytes else share)


def _estimate_count(count: ParamCount, dtype: str, backend: str, reserved: int | None = None) -> Estimate:
    """`reserved`: llama.cpp's context (`llamacpp_context`); None: transformers' CONTEXT_TOKENS budget."""
    weights = weight_bytes(count, dtype)
    cache = kv_cache_type(dtype, backend, count.head_dim)
    kv = kv_cache_bytes(count.kv_per_token, reserved or CONTEXT_TOKENS, cache)
    extra = RUNTIME_OVERHEAD + kv
    loaded_as = weight_bytes(count, "bfloat16") if dtype == "int8" else weights
    return Estimate(count.total, weights, weights + extra, max(weights, loaded_as) + extra, kv)


def estimate_bytes(source_or_config, dtype: str = "bfloat16") -> int:
    """Resident bytes of a model at `dtype`, from config.json alone (0 when unknowable)."""
    est = estimate(source_or_config, dtype)
    return est.resident_bytes if est else 0


def gib(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"


def _accounted(backend) -> int:
    """What a loaded backend holds: its measured RSS growth, or the estimate when that is larger
    (memory-mapped weights count as reclaimable "available" memory although they are in use), plus
    what its saved conversation caches hold now."""
    try:
        est = estimate(backend.spec.source, backend.spec.dtype, backend.spec.backend, backend.spec.context)
    except UserError:
        est = None
    held = max(int(getattr(backend, "resident_bytes", 0) or 0), est.resident_bytes if est else 0)
    saved = getattr(backend, "saved", None)  # its saved conversation caches (they shrink when RAM runs short)
    return held + (saved.used if saved is not None else 0)


def available_bytes(loaded=()) -> int:
    """RAM a new model may use: what the OS calls available, but never more than the total minus
    the app and the models already loaded (their estimate or measured size, whichever is larger)."""
    vm = psutil.virtual_memory()
    accounted = sum(_accounted(b) for b in loaded)
    return max(0, min(vm.available, vm.total - APP_BYTES - accounted))


def check_fits(spec, loaded=(), available: int | None = None) -> Estimate | None:
    """Raise UserError before a load that would not fit in RAM; the message names what would fit.

    Remote models and hub ids are not checked; set LLM_COMPARE_NO_MEMORY_CHECK=1 to load anyway.
    """
    if spec.backend == "openai" or os.environ.get(SKIP_ENV):
        return None
    try:
        est = estimate(spec.source, spec.dtype, spec.backend, spec.context)
    except UserError:  # cannot size it (bad path, odd config): the loader reports its own problem
        return None
    if est is None:
        return None
    loaded = list(loaded)
    free = available_bytes(loaded) if available is None else available
    if est.peak_bytes <= free:
        return est
    what = f"in {spec.dtype}" if spec.backend == "transformers" else f"with {spec.backend}"
    if est.peak_bytes > est.resident_bytes:
        what += f" while loading (≈{gib(est.resident_bytes)} after)"
    msg = f"{spec.label} needs ≈{gib(est.peak_bytes)} {what} but {gib(free)} is available"
    if loaded:
        saved = sum(b.saved.used for b in loaded if getattr(b, "saved", None) is not None)
        held = f", holding {gib(saved)} of saved conversation caches" if saved else ""
        msg += f" ({', '.join(b.spec.label for b in loaded)} already loaded{held})"
    fixes = []
    if spec.backend == "transformers" and spec.dtype in (*DTYPE_FALLBACKS, "float16", "auto"):
        # "auto" (not resolved yet) is sized as its smallest candidate, bfloat16
        start = DTYPE_FALLBACKS.index("bfloat16" if spec.dtype in ("float16", "auto") else spec.dtype) + 1
        for dtype in DTYPE_FALLBACKS[start:]:
            smaller = estimate(spec.source, dtype, context=spec.context)
            if smaller.peak_bytes <= free:
                fixes.append(f"use dtype {dtype} (≈{gib(smaller.resident_bytes)})")
                break
    if loaded and est.peak_bytes <= free + sum(_accounted(b) for b in loaded):
        fixes.append("load one model at a time (--one-model-at-a-time)")
    if not fixes:
        fixes.append("close other programs or use a smaller model")
    raise UserError(f"{msg}; {' or '.join(fixes)} (or set {SKIP_ENV}=1 to try anyway)")
