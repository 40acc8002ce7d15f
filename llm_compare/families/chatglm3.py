"""ChatGLM3-6B checkpoints (config.json model_type "chatglm") as a native `GlmForCausalLM`.

The original modeling code only runs on transformers <= 4.41, so instead of executing it we
translate: config.json becomes a `GlmConfig`, and each stored tensor is renamed (the fused
query_key_value is split into q/k/v rows, `[heads, groups, groups] x head_dim`). GLM's
interleaved half-rotary equals ChatGLM3's rope, so logits are bit-identical in float32
(checked against the original implementation on shared/fixtures/legacy/chatglm3-6b-tiny, beside
the repository). Variants whose maths differ (p-tuning prefixes, LayerNorm instead of RMSNorm, ...)
are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.families.family import Family
from llm_compare.families.renames import renaming_converter
from llm_compare.loading.tokenizer_chatglm3 import ChatGLM3Format, load_chatglm3_tokenizer
from llm_compare.specs import check_shape

REQUIRED = (
    "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "padded_vocab_size",
)  # fmt: skip
# field: (value the native mapping needs, value assumed when the field is absent)
MUST_BE = {
    "rmsnorm": (True, True),
    "post_layer_norm": (True, True),
    "original_rope": (True, True),
    "add_bias_linear": (False, False),
    "apply_residual_connection_post_layernorm": (False, False),
}
# optional fields and what the original ChatGLMConfig (configuration_chatglm.py) assumes without them
DEFAULTS = {"multi_query_attention": False, "multi_query_group_num": 1, "kv_channels": 128,
            "layernorm_epsilon": 1e-5, "seq_length": 2048, "rope_ratio": 1, "add_qkv_bias": False}
RAW_KEYS = {  # native key: raw key, to describe a config the mapping refuses
    "vocab_size": "padded_vocab_size", "hidden_size": "hidden_size", "intermediate_size": "ffn_hidden_size",
    "num_hidden_layers": "num_layers", "num_attention_heads": "num_attention_heads", "head_dim": "kv_channels",
    "max_position_embeddings": "seq_length",
}
GENERATION = {"eos_token_id": 2, "pad_token_id": 0}

RENAMES = {
    "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "transformer.encoder.final_layernorm.weight": "model.norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
LAYER = re.compile(r"transformer\.encoder\.layers\.(\d+)\.(.+)")
LAYER_RENAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.dense.weight": "self_attn.o_proj.weight",
    "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",  # first half gate, second half up: same in GLM
    "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
}


def check_variant(raw: dict, where: Path) -> None:
    """Refuse configs whose maths the native GLM class does not reproduce."""
    if raw.get("pre_seq_len") is not None:
        raise UserError(
            f"{where}: pre_seq_len is set (a p-tuning v2 prefix checkpoint), which is not supported; "
            "use the base chatglm3-6b weights"
        )
    if raw.get("quantization_bit"):
        raise UserError(
            f"{where}: quantization_bit {raw['quantization_bit']} (a pre-quantized chatglm checkpoint) is not "
            "supported; use the full-precision checkpoint with dtype int8"
        )
    if "position_encoding_2d" in raw or "inner_hidden_size" in raw:
        raise UserError(f"{where} is a first-generation ChatGLM-6B config, which is not supported; use chatglm3-6b")
    absent = [f for f in REQUIRED if not isinstance(raw.get(f), int) or raw[f] <= 0]
    if absent:
        raise UserError(f"{where} lacks {', '.join(absent)} (not a chatglm3 config); re-download config.json")
    for field, (needed, default) in MUST_BE.items():
        if bool(raw.get(field, default)) != needed:
            raise UserError(
                f"{where}: {field} is {raw.get(field)!r}, which the native GLM model does not reproduce; "
                f"only chatglm3-style checkpoints ({field} = {str(needed).lower()}) are supported"
            )


def option(raw: dict, field: str):
    """An optional config field, or what the original ChatGLMConfig assumes without it."""
    value = raw.get(field)
    return DEFAULTS[field] if value is None else value


def native_config(raw: dict, where: Path):
    """The `GlmConfig` equivalent of a chatglm config.json (see docs/seed-models.md)."""
    from transformers import GlmConfig

    check_variant(raw, where)
    check_shape(raw, str(where))
    heads = raw["num_attention_heads"]
    groups = option(raw, "multi_query_group_num") if option(raw, "multi_query_attention") else heads
    if not isinstance(groups, int) or groups <= 0 or heads % groups:
        raise UserError(
            f"{where}: multi_query_group_num {groups!r} does not divide {heads} heads; re-download config.json"
        )
    return GlmConfig(
        vocab_size=raw["padded_vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["ffn_hidden_size"],
        num_hidden_layers=raw["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=groups,
        head_dim=option(raw, "kv_channels"),
        rms_norm_eps=option(raw, "layernorm_epsilon"),
        max_position_embeddings=option(raw, "seq_length"),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0 * option(raw, "rope_ratio"),
            "partial_rotary_factor": 0.5,
        },
        attention_bias=bool(option(raw, "add_qkv_bias")),
        hidden_act="silu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
        architectures=["GlmForCausalLM"],
    )


def converter(config):
    """Source tensor -> native tensors for this config (query_key_value split by the GQA rows)."""
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim

    def split(tensor):
        return tensor.split([q_rows, kv_rows, kv_rows], dim=0) if tensor.shape[0] == q_rows + 2 * kv_rows else None

    # the rotary inv_freq is recomputed by the native rotary embedding
    return renaming_converter(RENAMES, LAYER, LAYER_RENAMES, "self_attention.query_key_value", split,
                              drop={"transformer.rotary_pos_emb.inv_freq"})


def generation(path: Path) -> dict:
    """ChatGLM3 ships no generation_config.json: its ids are fixed."""
    return dict(GENERATION)


FAMILY = Family(
    loader="ChatGLM3 checkpoint (renamed into GlmForCausalLM, no remote code)",
    kind="chatglm3", title="ChatGLM3 (GLM, decoder-only)", what="chatglm3", native_type="glm",
    native_class="GlmForCausalLM", native_config=native_config, converter=converter,
    load_tokenizer=load_chatglm3_tokenizer, chat_format=ChatGLM3Format, generation=generation, vocab="chatglm3",
    renamed=True, raw_keys=RAW_KEYS,
)
