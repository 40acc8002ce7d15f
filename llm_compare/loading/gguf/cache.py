"""The GGUF -> transformers conversion cache: a GGUF file unpacked once into a dense model directory.

llama-family files are unpacked natively (`unpack.py`, a few seconds for the embedded 135M model),
anything else by transformers' own GGUF loading (≈30 s for 135M on 2 cores). The dense weights and the
tokenizer go to a cache folder (`LLM_COMPARE_CACHE`, default ~/.cache/llm_compare) keyed by the
file's path, size and mtime; later loads read that in well under a second. A file lock makes a second
caller wait for the first conversion.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_compare.errors import UserError
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.gguf.unpack import VOCAB_KEYS, not_covered, write_model_directory
from llm_compare.loading.source import resolve_source
from llm_compare.machine import cache_root, cache_write_error
from llm_compare.progress import status
from llm_compare.specs import is_gguf_dtype

log = logging.getLogger(__name__)


CONVERSION_VERSION = 2  # bump when the converted folder could differ (2: the native llama conversion)


def gguf_cache_dir(path: Path) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}|{CONVERSION_VERSION}"
    return cache_root() / "gguf" / hashlib.sha256(key.encode()).hexdigest()[:16]


def convert_gguf(path: Path) -> Path:
    """Dense safetensors + tokenizer for a GGUF file, written once into the cache (tmp folder + rename).
    A file lock makes a second caller (the other pane, the launch-time conversion) wait for the first."""
    target = gguf_cache_dir(path)
    if (target / "complete").exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            if not _try_lock(lock):
                status(f"waiting for the one-time conversion of {path.name} for transformers, already running "
                       "(started at launch or by the other pane; ≈5-10 s in all; later loads ≈1 s)")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "complete").exists():
                for leftover in target.parent.glob(target.name + ".tmp*"):  # from a conversion that was killed
                    shutil.rmtree(leftover, ignore_errors=True)
                _convert_into(path, target)
    except OSError as e:  # disk full, a file in the way, permissions: one line, nothing partial kept
        raise cache_write_error(e, f"converting {path.name} for transformers", target.parent,
                                2 * path.stat().st_size) from None
    return target


def convert_in_background(specs) -> list[threading.Thread]:
    """Start the one-time conversion of these specs' GGUF files (transformers backend, not yet cached) in
    daemon threads, so a user who opens the page finds it done; a Send meanwhile waits on its lock."""
    threads, paths = [], set()
    for spec in specs:
        if spec.backend != "transformers" or is_gguf_dtype(spec.dtype):
            continue
        try:
            source = resolve_source(spec.source)
        except UserError:
            continue  # the Send will say what is wrong, in the pane
        if source.kind != "gguf" or source.path in paths or (gguf_cache_dir(source.path) / "complete").exists():
            continue
        paths.add(source.path)
        thread = threading.Thread(target=_convert_quietly, args=(source.path,), daemon=True,
                                  name=f"convert-{source.path.name}")
        thread.start()
        threads.append(thread)
    return threads


def _convert_quietly(path: Path) -> None:
    try:
        convert_gguf(path)
    except Exception as e:  # noqa: BLE001 - the Send retries and shows the message in the pane
        log.warning("background conversion of %s failed: %s", path.name, e)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _convert_into(path: Path, target: Path) -> None:
    header = check_gguf(path, VOCAB_KEYS)
    reason = not_covered(header)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        if reason is None:
            log.info("converting %s once into %s (native llama conversion; later loads are fast)", path.name, target)
            once = "one time, ≈5-10 s; later loads ≈1 s"
            write_model_directory(path, header, tmp, lambda step: status(f"converting {path.name} for transformers "
                                                                           f"({once}): {step}"))
        else:
            log.warning("%s: %s is not covered by the fast GGUF conversion; transformers converts it (one time, "
                        "≈30 s for 135M parameters on 2 cores)", path.name, reason)
            convert_with_transformers(path, tmp, reason)
        (tmp / "complete").write_text(str(path))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing partial left behind
        raise
    log.info("converted %s in %.1f s", path.name, time.perf_counter() - t0)


def convert_with_transformers(path: Path, tmp: Path, reason: str) -> None:
    """transformers' own GGUF loading, for the files the native conversion does not cover."""
    once = f"one time, slow: {reason} needs transformers' own GGUF conversion; later loads ≈1 s"
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
    status(f"converting {path.name} for transformers, step 3/3: saving the dense weights")
    dense.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del gguf_model, dense
