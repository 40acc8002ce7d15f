"""One tensor table per model, from its native transformers config: every weight's llama.cpp name
and shape (GGUF dimension order, innermost first: a linear layer is [in, out]).

Parameter counts (the RAM check, the Architecture tab), GGUF file sizes and the exporter's tensor
names all come from here, so the bias, head-size and MLP rules of each class are written once.
tests/test_families.py checks the table against the models transformers builds from the same configs.
"""

from __future__ import annotations

import re

# native transformers name -> llama.cpp name (the exporter writes these; GGUF unpacking reads them back)
TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",  # GLM: fused, gate half first (llama.cpp's SWIGLU order)
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate_proj.bias": "ffn_gate.bias",
    "mlp.up_proj.bias": "ffn_up.bias",
    "mlp.down_proj.bias": "ffn_down.bias",
}


def _attention_bias(config) -> bool:
    return bool(getattr(config, "attention_bias", False))


# native model_type -> (q/k/v biases?, output-projection bias?): each class's own rule
BIASES = {
    "llama": lambda c: (_attention_bias(c), _attention_bias(c)),
    "mistral": lambda c: (False, False),
    "qwen2": lambda c: (True, False),
    "qwen3": lambda c: (_attention_bias(c), _attention_bias(c)),
    "glm": lambda c: (_attention_bias(c), False),
}
QK_NORM = ("qwen3",)  # classes with an RMSNorm over each query and key head
FUSED_GATE_UP = ("glm",)  # classes whose gate and up projections are one matrix (gate rows first)
MLP_BIAS = ("llama",)  # classes with a `mlp_bias` switch


def covers(model_type) -> bool:
    """Whether `tensor_shapes` describes this native class (llama-shaped decoders)."""
    return model_type in BIASES


def head_dim(config) -> int:
    """The per-head width the class uses: its `head_dim`, else hidden_size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def tensor_shapes(config) -> list[tuple[str, tuple[int, ...]]] | None:
    """Every weight of the model `config` builds: (llama.cpp name, GGUF shape), None for a class
    this table does not describe (`covers`)."""
    if not covers(getattr(config, "model_type", None)):
        return None
    hidden, inter, width = config.hidden_size, config.intermediate_size, head_dim(config)
    q, kv = config.num_attention_heads * width, kv_heads(config) * width
    qkv_bias, o_bias = BIASES[config.model_type](config)
    mlp_bias = config.model_type in MLP_BIAS and bool(getattr(config, "mlp_bias", False))
    table = [("token_embd.weight", (hidden, config.vocab_size))]
    for i in range(config.num_hidden_layers):
        blk = f"blk.{i}."
        table += [(blk + "attn_norm.weight", (hidden,)), (blk + "ffn_norm.weight", (hidden,))]
        for part, rows in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
            table.append((blk + part + ".weight", (hidden, rows)))
            table += [(blk + part + ".bias", (rows,))] if qkv_bias else []
        table.append((blk + "attn_output.weight", (q, hidden)))
        table += [(blk + "attn_output.bias", (hidden,))] if o_bias else []
        if config.model_type in QK_NORM:
            table += [(blk + "attn_q_norm.weight", (width,)), (blk + "attn_k_norm.weight", (width,))]
        if config.model_type in FUSED_GATE_UP:
            table.append((blk + "ffn_up.weight", (hidden, 2 * inter)))
        else:
            table += [(blk + "ffn_gate.weight", (hidden, inter)), (blk + "ffn_up.weight", (hidden, inter))]
        table.append((blk + "ffn_down.weight", (inter, hidden)))
        if mlp_bias:
            table += [(blk + "ffn_gate.bias", (inter,)), (blk + "ffn_up.bias", (inter,)), (blk + "ffn_down.bias", (hidden,))]
    table.append(("output_norm.weight", (hidden,)))
    if not getattr(config, "tie_word_embeddings", False):
        table.append(("output.weight", (hidden, config.vocab_size)))
    return table


def rename(name: str, top: dict, layer: re.Pattern, in_layer: dict, template: str) -> str | None:
    """`name` through a whole-model table, or a per-layer table (`layer` matches (index, rest) and
    `template` puts them back); None when neither knows it."""
    if name in top:
        return top[name]
    match = layer.fullmatch(name)
    if match and match.group(2) in in_layer:
        return template.format(match.group(1), in_layer[match.group(2)])
    return None


def gguf_name(native: str) -> str | None:
    """llama.cpp's name for a native transformers tensor name, None when it has none."""
    return rename(native, TOP_NAMES, LAYER, LAYER_NAMES, "blk.{}.{}")
