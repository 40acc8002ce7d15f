"""A native config.json's architecture without its weights, and what every reader shares: the `Reading`
of one source in native config names (a seed format through its family's mapping, `llm_compare/families/`: `legacy.py`; a GGUF header: `read_gguf.py`;
which reader a source takes: `sources.py`).

Facts not in the source stay None and are listed in `not_stated`; nothing is guessed. Values the
model class defines when the config is silent (a llama-class head dimension is hidden / heads)
are derived and say so in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llm_compare.chat_formats import choose_format
from llm_compare.errors import UserError
from llm_compare.families import native as native_family
from llm_compare.families.tensors import BIASES, head_dim, kv_heads, tensor_shapes
from llm_compare.specs import shape_problems

LLAMA_SHAPED = tuple(BIASES)  # classes families/tensors.py describes
FULL_ROTARY = ("llama", "mistral", "qwen2", "qwen3")  # classes that rotate the whole head
GATED_ACTS = {"silu": "SwiGLU", "swish": "SwiGLU", "gelu": "GeGLU", "gelu_pytorch_tanh": "GeGLU",
              "gelu_new": "GeGLU"}
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim")


@dataclass
class Reading:
    """What one source says about its architecture (native config vocabulary)."""

    kind: str  # chatglm3 | qwen | hf_dir | gguf | remote | hub
    family: str
    transformers_class: str | None
    via: str  # how the project runs it: "native", "legacy remap (...)", "GGUF unpacked by transformers", ...
    config: dict = field(default_factory=dict)  # native keys; a missing key is "not stated"
    table: dict | None = None  # tensors.py tensor table, when the shape is known
    file_types: dict | None = None  # GGUF: tensor bytes in the file and its type names
    notes: list[str] = field(default_factory=list)
    load_tokenizer: Callable | None = None  # () -> (tokenizer, chat format); reads no weights
    path: Path | None = None
    raw: dict | None = None  # a native config.json as written (for classes tensors.py does not describe)


def rope_facts(cfg: dict) -> dict:
    """rope theta / rotated fraction / scaling / trained context from a native config dict."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    params = params if isinstance(params, dict) else {}
    out = {"rope_theta": params.get("rope_theta", cfg.get("rope_theta")),
           "rope_fraction": params.get("partial_rotary_factor", cfg.get("partial_rotary_factor")),
           "trained_context_length": params.get("original_max_position_embeddings")}
    kind = params.get("rope_type") or params.get("type")
    if kind and kind != "default":
        factor = params.get("factor")
        out["rope_scaling"] = f"{kind}" + (f" ×{factor}" if factor else "")
    elif "rope_parameters" in cfg or "rope_scaling" in cfg:
        out["rope_scaling"] = "none"
    return out


def valid_sizes(cfg: dict, notes: list[str], where: str = "config.json") -> tuple[dict, dict]:
    """(cfg without the sizes no model has, {key: "invalid in config.json: ..."}); each problem noted.
    An impossible value is shown as invalid, never as a fact nor as a base for derived ones."""
    invalid = shape_problems(cfg, where)
    notes.extend(invalid.values())
    return {k: v for k, v in cfg.items() if k not in invalid}, invalid


def shape_facts(cfg: dict, model_type: str | None, notes: list[str], native=None) -> dict:
    """Layers, widths, heads, norm and activation from native config keys; values the class supplies
    when the config is silent (`native`: the config object the model is built from) noted;
    impossible sizes left out (`facts["invalid"]` says why)."""
    cfg, invalid = valid_sizes(cfg, notes)
    facts = {k: cfg.get(k) for k in SHAPE_KEYS}
    facts["invalid"] = invalid
    heads, hidden = facts["num_attention_heads"], facts["hidden_size"]
    if model_type in LLAMA_SHAPED and native is not None and isinstance(heads, int) and isinstance(hidden, int):
        if facts["head_dim"] is None:
            facts["head_dim"] = head_dim(native)
            notes.append(f"head_dim not stated: the model class uses {facts['head_dim']}"
                         + ("" if getattr(native, "head_dim", None) else " (hidden_size / num_attention_heads)"))
        if facts["num_key_value_heads"] is None:
            facts["num_key_value_heads"] = kv_heads(native)
            notes.append(f"num_key_value_heads not stated: the model class uses {facts['num_key_value_heads']}"
                         + (" (one KV head per head: MHA)" if facts["num_key_value_heads"] == heads else ""))
    eps_rms, eps_ln = cfg.get("rms_norm_eps"), cfg.get("layer_norm_eps", cfg.get("layer_norm_epsilon"))
    facts["norm_type"] = "RMSNorm" if eps_rms is not None else "LayerNorm" if eps_ln is not None else None
    facts["norm_eps"] = eps_rms if eps_rms is not None else eps_ln
    act = cfg.get("hidden_act") or cfg.get("hidden_activation")
    gated = model_type in LLAMA_SHAPED
    facts["activation"] = (GATED_ACTS.get(act, f"gated {act}") if gated and act else act)
    facts["tied_embeddings"] = cfg.get("tie_word_embeddings")
    bias = cfg.get("attention_bias")
    facts["qkv_bias"] = BIASES[model_type](native)[0] if native is not None and model_type in BIASES else bias
    facts["context_length"] = cfg.get("max_position_embeddings")
    facts.update(rope_facts(cfg))
    if facts["rope_fraction"] is None and model_type in FULL_ROTARY:
        facts["rope_fraction"] = 1.0
    return facts


def table_for(native) -> dict | None:
    """The tensor table of the native config a model is built from, None when the class is not
    one families/tensors.py describes (or the config could not be read)."""
    table = tensor_shapes(native) if native is not None else None
    return dict(table) if table else None


def native_names(raw: dict, model_type) -> dict:
    """The config with the class's own aliases (GPT-2's n_layer, n_head, ...) under the native names."""
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        aliases = CONFIG_MAPPING[model_type].attribute_map if model_type else {}
    except (KeyError, ImportError):
        aliases = {}
    return raw | {native: raw[stored] for native, stored in aliases.items() if native not in raw and stored in raw}


def read_native_dir(path: Path, raw: dict) -> Reading:
    model_type = raw.get("model_type")
    classes = raw.get("architectures") or []
    notes: list[str] = []
    native = class_defaults = None
    try:
        class_defaults = native_family.class_config(raw, path / "config.json")
        native = native_family.native_config(raw, path / "config.json")
    except UserError:  # an unknown class, an impossible or a missing size: no tensor table
        pass
    facts = shape_facts(native_names(raw, model_type), model_type, notes, class_defaults)
    reading = Reading("hf_dir", str(model_type or "unknown"), classes[0] if classes else None, "native transformers",
                      config=facts, table=table_for(native), notes=notes, path=path, raw=raw)
    reading.load_tokenizer = lambda: hf_tokenizer(path)
    if model_type not in LLAMA_SHAPED:
        notes.append(f"model type {model_type!r}: read from config.json; parameters per part unknown")
    return reading


def hf_tokenizer(directory, **kwargs):
    """A transformers tokenizer (never remote code) and its chat-template format, or a UserError."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure means "tokenizer unknown", shown as such
        raise UserError(f"tokenizer not readable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return with_format(tokenizer)


def with_format(tokenizer):
    """(tokenizer, its chat-template format or None when it has none)."""
    try:
        return tokenizer, choose_format("auto", tokenizer)
    except UserError:
        return tokenizer, None
