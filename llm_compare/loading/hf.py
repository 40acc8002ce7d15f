"""transformers-native model directories, GGUF files and hub ids.

A GGUF file is loaded from its dense model directory in the conversion cache (`loading/gguf/cache.py`).
"""

from __future__ import annotations

import logging
import time

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from llm_compare.chat_formats import choose_format
from llm_compare.errors import UserError
from llm_compare.families.native import context_length
from llm_compare.loading.gguf.cache import convert_gguf
from llm_compare.loading.quantize import quantize_int8, torch_dtype
from llm_compare.loading.source import LoadedModel, Source
from llm_compare.machine import rss

log = logging.getLogger(__name__)


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
        context_length=context_length(config),
        load_seconds=time.perf_counter() - t0,
        resident_bytes=max(0, rss() - before),
        loader=loader,
    )
