"""transformers-native model directories, GGUF files and hub ids.

A GGUF file is unpacked by transformers into a dense model, which takes ≈20 s for a 135M model
(most of it tokenizer and tensor conversion). The first load writes the dense weights and the
tokenizer to a cache folder (`LLM_COMPARE_CACHE`, default ~/.cache/llm_compare) keyed by the
file's path, size and mtime; later loads read that in well under a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from llm_compare.chat_formats import choose_format
from llm_compare.errors import UserError
from llm_compare.loading import LoadedModel, Source
from llm_compare.loading.quantize import quantize_int8
from llm_compare.machine import cache_root, rss
from llm_compare.progress import status

log = logging.getLogger(__name__)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The dtype weights are loaded in; int8 loads bfloat16 then quantizes the linear layers."""
    return TORCH_DTYPES.get(name, torch.bfloat16)


def context_length_of(config) -> int | None:
    for attr in ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def gguf_cache_dir(path: Path) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    return cache_root() / "gguf" / hashlib.sha256(key.encode()).hexdigest()[:16]


def convert_gguf(path: Path) -> Path:
    """Dense safetensors + tokenizer for a GGUF file, written once into the cache."""
    target = gguf_cache_dir(path)
    if (target / "complete").exists():
        return target
    log.info("converting %s once into %s (later loads are fast)", path.name, target)
    once = "one time: transformers parses the whole GGUF in Python, ≈1 min on 2 cores; later loads ≈1 s"
    try:
        status(f"converting {path.name} for transformers, step 1/3: its tokenizer ({once})")
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        status(f"converting {path.name} for transformers, step 2/3: de-quantizing its weights ({once})")
        gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except ValueError as e:
        reason = str(e).splitlines()[0].rstrip(".")
        if "not supported" in reason or "architecture" in reason.lower():
            raise UserError(
                f"{path.name}: {reason}; use the llamacpp backend for it, or a transformers model directory"
            ) from None
        raise UserError(f"{path.name} is not a readable GGUF model: {reason}") from None
    except (OSError, KeyError) as e:
        raise UserError(f"{path.name} is not a readable GGUF model ({type(e).__name__}: {e})") from None
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the config and copy weights
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    dense.load_state_dict(gguf_model.state_dict(), assign=True, strict=False)
    dense.tie_weights()
    dense.generation_config = gguf_model.generation_config
    status(f"converting {path.name} for transformers, step 3/3: saving the dense weights to {target.parent}")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dense.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "complete").write_text(str(path))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    del gguf_model, dense
    return target


def load_hf(source: Source, spec) -> LoadedModel:
    before, t0 = rss(), time.perf_counter()
    if source.kind == "gguf":
        directory, loader = convert_gguf(source.path), "gguf"
    elif source.kind == "hub":
        directory, loader = source.hub_id, "hub"
    else:
        directory, loader = source.path, "hf"
    kwargs = {"trust_remote_code": bool(spec.trust_remote_code)}
    if spec.trust_remote_code:
        log.warning("%s: trust_remote_code is on: Python code from %s will run", spec.name, directory)
    try:
        config = AutoConfig.from_pretrained(directory, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype(spec.dtype), **kwargs)
    except OSError as e:
        if loader == "hub":
            raise UserError(
                f"cannot fetch {directory!r} from the model hub ({str(e).splitlines()[0]}); "
                "download it on a connected machine and pass the local directory"
            ) from None
        raise UserError(f"cannot load {directory}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            raise UserError(
                f"{directory} needs custom code to load; pass --trust-remote-code only if you trust its author"
            ) from None
        raise UserError(f"cannot load {directory}: {msg}") from None
    model.eval()
    if spec.dtype == "int8":
        quantize_int8(model)
    fmt = choose_format(spec.chat_format, tokenizer, getattr(model, "generation_config", None))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        chat_format=fmt,
        context_length=context_length_of(config),
        load_seconds=time.perf_counter() - t0,
        resident_bytes=max(0, rss() - before),
        loader=loader,
    )
