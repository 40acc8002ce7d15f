"""Qwen-7B-Chat (Qwen-1, config.json model_type "qwen") checkpoints as a native `Qwen2ForCausalLM`.

The original modeling code does not run on transformers 5 (and, patched to run, re-randomises a
weight after loading), so we translate: config.json becomes a `Qwen2Config` and each tensor is
renamed (c_attn split into three equal q/k/v row chunks, w2 = gate, w1 = up; the MLP width is
Qwen's intermediate_size / 2). Identical to the original up to `seq_length` (8192) tokens; past
it the original switches on dynamic-NTK rope and log-n attention scaling, which Qwen2 does not
have, so the context is capped at `seq_length`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.families.family import Family
from llm_compare.families.renames import renaming_converter
from llm_compare.loading.tokenizer_qwen import QwenFormat, load_qwen_tokenizer
from llm_compare.specs import check_shape

log = logging.getLogger(__name__)

REQUIRED = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
# optional fields and what the original QWenConfig (configuration_qwen.py) assumes without them
DEFAULTS = {"kv_channels": 128, "layer_norm_epsilon": 1e-6, "seq_length": 8192, "rotary_emb_base": 10000,
            "rotary_pct": 1.0, "no_bias": True, "scale_attn_weights": True}
RAW_KEYS = {  # native key: raw key, to describe a config the mapping refuses
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads", "head_dim": "kv_channels", "max_position_embeddings": "seq_length",
}
ENDOFTEXT = 151643
TOKENIZER_IDS = 151851  # 151643 ranks, <|endoftext|>, <|im_start|>, <|im_end|>, 205 <|extra_N|>
# generation_config.json fields that mean the same to transformers 5's GenerationConfig
GENERATION_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")

RENAMES = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
LAYER = re.compile(r"transformer\.h\.(\d+)\.(.+)")
LAYER_RENAMES = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.w2.weight": "mlp.gate_proj.weight",  # Qwen-1 computes c_proj(w1(x) * silu(w2(x)))
    "mlp.w1.weight": "mlp.up_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}


def option(raw: dict, field: str):
    """An optional config field, or what the original QWenConfig assumes without it."""
    value = raw.get(field)
    return DEFAULTS[field] if value is None else value


def check_variant(raw: dict, where: Path) -> None:
    """Refuse configs whose maths the native Qwen2 class does not reproduce."""
    if raw.get("quantization_config"):
        raise UserError(
            f"{where}: a pre-quantized Qwen checkpoint (quantization_config) is not supported; "
            "use the full-precision checkpoint with dtype int8"
        )
    absent = [f for f in REQUIRED if not isinstance(raw.get(f), int) or raw[f] <= 0]
    if absent:
        raise UserError(f"{where} lacks {', '.join(absent)} (not a Qwen-1 config); re-download config.json")
    problems = []
    if raw["vocab_size"] < TOKENIZER_IDS:
        problems.append(f"vocab_size {raw['vocab_size']} is smaller than Qwen-1's tokenizer ({TOKENIZER_IDS} ids)")
    if option(raw, "rotary_pct") != 1.0:
        problems.append(f"rotary_pct is {raw['rotary_pct']} (only 1.0 is supported)")
    if not option(raw, "no_bias"):
        problems.append("no_bias is false (only bias-free projections besides c_attn are supported)")
    if not option(raw, "scale_attn_weights"):
        problems.append("scale_attn_weights is false")
    kv = option(raw, "kv_channels")
    if kv * raw["num_attention_heads"] != raw["hidden_size"]:
        problems.append(f"kv_channels x num_attention_heads ({kv} x {raw['num_attention_heads']}) != hidden_size")
    if raw["intermediate_size"] % 2:
        problems.append(f"intermediate_size {raw['intermediate_size']} is odd (Qwen-1 stores twice the MLP width)")
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}; this Qwen variant cannot be loaded natively")


def context_of(raw: dict, where: Path) -> int:
    """seq_length: past it the original's dynamic-NTK / log-n scaling would change the results."""
    context = raw.get("seq_length") or raw.get("max_position_embeddings") or DEFAULTS["seq_length"]
    if raw.get("use_dynamic_ntk") or raw.get("use_logn_attn"):
        log.info("%s: context capped at seq_length %d (the original's dynamic-NTK / log-n scaling past it "
                 "is not reproduced)", where, context)
    return context


def native_config(raw: dict, where: Path):
    """The `Qwen2Config` equivalent of a Qwen-1 config.json (see docs/seed-models.md)."""
    from transformers import Qwen2Config

    check_variant(raw, where)
    check_shape(raw, str(where))
    return Qwen2Config(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"] // 2,
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        num_key_value_heads=raw["num_attention_heads"],
        head_dim=option(raw, "kv_channels"),
        rms_norm_eps=option(raw, "layer_norm_epsilon"),
        max_position_embeddings=context_of(raw, where),
        rope_parameters={"rope_type": "default", "rope_theta": float(option(raw, "rotary_emb_base"))},
        use_sliding_window=False,
        hidden_act="silu",
        tie_word_embeddings=False,
        eos_token_id=ENDOFTEXT,
        pad_token_id=ENDOFTEXT,
        bos_token_id=None,
        architectures=["Qwen2ForCausalLM"],
    )


def long_context_notes(raw: dict) -> list[str]:
    """Qwen-1's run-time context extension, which lives in the original code, not in rope settings."""
    return [name for key, name in (("use_dynamic_ntk", "dynamic NTK"), ("use_logn_attn", "log-n attention"))
            if raw.get(key)]


def generation(path: Path) -> dict:
    """The checkpoint's generation_config.json (repetition_penalty 1.1, top_p 0.8, ...) for plain generate()."""
    defaults = {"eos_token_id": ENDOFTEXT, "pad_token_id": ENDOFTEXT}
    file = path / "generation_config.json"
    if not file.is_file():
        return defaults
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {file} ({e}); re-download it or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} is not a JSON object; re-download it or delete it")
    defaults.update({k: data[k] for k in GENERATION_FIELDS if data.get(k) is not None})
    if defaults.get("top_k") == 0:  # Qwen-1's "no top-k"; transformers 5 spells that None
        defaults.pop("top_k")
    return defaults


def converter(config):
    """Source tensor -> native tensors (c_attn split into three equal row chunks)."""

    def split(tensor):
        return tensor.chunk(3, dim=0) if tensor.shape[0] == 3 * config.hidden_size else None

    return renaming_converter(RENAMES, LAYER, LAYER_RENAMES, "attn.c_attn", split)


FAMILY = Family(
    loader="Qwen-1 checkpoint (renamed into Qwen2ForCausalLM, no remote code)",
    kind="qwen", title="Qwen-1 (decoder-only)", what="Qwen-1", native_type="qwen2", native_class="Qwen2ForCausalLM",
    native_config=native_config, converter=converter, load_tokenizer=load_qwen_tokenizer, chat_format=QwenFormat,
    generation=generation, vocab="qwen", renamed=True, raw_keys=RAW_KEYS, long_context=long_context_notes,
)
