"""One description per model family: the estimate (parameter count, RAM) and the loader read a
config.json the same way, also when it leaves optional fields out, and both match checkpoints
written the way the original code lays them out; the tensor table matches the models transformers
builds; GGUF metadata maps to native config names one way."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import LEGACY_FIXTURES
from llm_compare.errors import UserError
from llm_compare.families import chatglm3
from llm_compare.families.gguf_metadata import native_config as gguf_native_config
from llm_compare.families.tensors import gguf_name, tensor_shapes
from llm_compare.loading import load_model
from llm_compare.loading.memory import count_parameters, estimate
from llm_compare.specs import ModelSpec

PACKAGE = Path(__file__).resolve().parent.parent / "llm_compare"
needs_fixtures = pytest.mark.skipif(not LEGACY_FIXTURES.is_dir(), reason="legacy fixtures not present")

# config.json files with every optional field left out (MQA, kv_channels, seq_length, biases, eps, rope, ...)
BARE_CHATGLM3 = {"model_type": "chatglm", "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 96,
                 "num_attention_heads": 4, "padded_vocab_size": 3072}
BARE_QWEN = {"model_type": "qwen", "num_hidden_layers": 1, "hidden_size": 128, "intermediate_size": 128,
             "num_attention_heads": 1, "vocab_size": 151936}
BARE_NATIVE = {
    "llama": {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4},
    "qwen3": {"model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
}


def original_chatglm3_tensors(raw: dict) -> dict[str, tuple[int, ...]]:
    """The stored tensors the original ChatGLM3 code (configuration_chatglm.py / modeling_chatglm.py)
    builds for `raw`: its defaults are multi-head attention, kv_channels 128 and no q/k/v bias."""
    hidden, heads, kv_channels = raw["hidden_size"], raw["num_attention_heads"], raw.get("kv_channels", 128)
    groups = raw.get("multi_query_group_num", 1) if raw.get("multi_query_attention", False) else heads
    qkv = heads * kv_channels + 2 * groups * kv_channels
    vocab, ffn = raw["padded_vocab_size"], raw["ffn_hidden_size"]
    tensors = {"transformer.embedding.word_embeddings.weight": (vocab, hidden),
               "transformer.encoder.final_layernorm.weight": (hidden,), "transformer.output_layer.weight": (vocab, hidden)}
    for i in range(raw["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        tensors |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                    p + "self_attention.query_key_value.weight": (qkv, hidden),
                    p + "self_attention.dense.weight": (hidden, heads * kv_channels),
                    p + "mlp.dense_h_to_4h.weight": (2 * ffn, hidden), p + "mlp.dense_4h_to_h.weight": (hidden, ffn)}
        if raw.get("add_qkv_bias", False) or raw.get("add_bias_linear", False):
            tensors[p + "self_attention.query_key_value.bias"] = (qkv,)
    return tensors


def original_qwen_tensors(raw: dict) -> dict[str, tuple[int, ...]]:
    """The stored tensors the original Qwen-1 code (configuration_qwen.py / modeling_qwen.py) builds:
    kv_channels 128 by default, c_attn with a bias, the MLP's two halves of intermediate_size / 2."""
    hidden, vocab, half = raw["hidden_size"], raw["vocab_size"], raw["intermediate_size"] // 2
    projection = raw["num_attention_heads"] * raw.get("kv_channels", 128)
    tensors = {"transformer.wte.weight": (vocab, hidden), "transformer.ln_f.weight": (hidden,),
               "lm_head.weight": (vocab, hidden)}
    for i in range(raw["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        tensors |= {p + "ln_1.weight": (hidden,), p + "ln_2.weight": (hidden,),
                    p + "attn.c_attn.weight": (3 * projection, hidden), p + "attn.c_attn.bias": (3 * projection,),
                    p + "attn.c_proj.weight": (hidden, projection), p + "mlp.w1.weight": (half, hidden),
                    p + "mlp.w2.weight": (half, hidden), p + "mlp.c_proj.weight": (hidden, half)}
    return tensors


def write_checkpoint(directory: Path, raw: dict, tensors: dict, tokenizer_files: list[Path]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(raw))
    g = torch.Generator().manual_seed(0)
    save_file({k: (0.02 * torch.randn(s, generator=g)).to(torch.bfloat16) for k, s in tensors.items()},
              directory / "model.safetensors", metadata={"format": "pt"})
    for f in tokenizer_files:
        shutil.copy(f, directory / f.name)
    return directory


def assert_estimate_is_the_loaded_model(directory: Path, raw: dict, stored: int | None = None) -> None:
    """Parameter count, K/V width and RAM estimate from config.json equal the model the loader built."""
    model = load_model(ModelSpec(name="m", source=str(directory), dtype="bfloat16")).model
    real = sum(p.numel() for p in model.parameters())
    count = count_parameters(raw)
    assert count.total == real
    if stored is not None:
        assert real == stored
    k_rows = sum(layer.self_attn.k_proj.out_features for layer in model.model.layers)
    assert count.kv_per_token == 2 * k_rows
    est = estimate(str(directory), "bfloat16")
    assert est.params == real
    assert est.weights_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    built = {gguf_name(n): tuple(reversed(p.shape)) for n, p in model.named_parameters()}
    assert dict(tensor_shapes(model.config)) == built


@needs_fixtures
@pytest.mark.parametrize("raw, original_layout, tokenizer", [
    (BARE_CHATGLM3, original_chatglm3_tensors, "chatglm3-6b-tiny/tokenizer.model"),
    (BARE_QWEN, original_qwen_tensors, "qwen-7b-chat-tiny/qwen.tiktoken"),
], ids=["chatglm3", "qwen1"])
def test_seed_family_without_optional_fields(raw, original_layout, tokenizer, tmp_path):
    tensors = original_layout(raw)
    directory = write_checkpoint(tmp_path / "model", raw, tensors, [LEGACY_FIXTURES / tokenizer])
    assert_estimate_is_the_loaded_model(directory, raw, sum(torch.Size(s).numel() for s in tensors.values()))


@pytest.mark.parametrize("name", list(BARE_NATIVE))
def test_native_without_optional_fields(name, tmp_path, tiny_model_dir):
    """A native config lacking head_dim, num_key_value_heads, biases and tying (qwen3's class default
    head_dim is 128, not hidden / heads): weights written by transformers itself."""
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    raw = BARE_NATIVE[name]
    directory = tmp_path / name
    AutoModelForCausalLM.from_config(CONFIG_MAPPING[name](**raw)).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(raw))
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, directory / f.name)
    assert_estimate_is_the_loaded_model(directory, raw)


@pytest.mark.parametrize("old_reading", [
    {"multi_query_attention": True},  # the RAM estimate's old default: grouped-query attention
    {"add_qkv_bias": True},  # the loader's old default
    {"kv_channels": 16},  # the estimate's old default: hidden / heads
], ids=["gqa", "qkv-bias", "head-dim"])
@needs_fixtures
def test_an_old_reading_of_optional_fields_disagrees_with_the_original_layout(old_reading, tmp_path, monkeypatch):
    """The check above has teeth: with any of the old, disagreeing defaults the mapping no longer
    describes the checkpoint the original code writes, and loading it fails."""
    monkeypatch.setattr(chatglm3, "DEFAULTS", chatglm3.DEFAULTS | old_reading)
    directory = write_checkpoint(tmp_path / "glm", BARE_CHATGLM3, original_chatglm3_tensors(BARE_CHATGLM3),
                                 [LEGACY_FIXTURES / "chatglm3-6b-tiny" / "tokenizer.model"])
    with pytest.raises((UserError, AssertionError)):
        assert_estimate_is_the_loaded_model(directory, BARE_CHATGLM3)


def _configs():
    from transformers import GlmConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    tiny = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                pad_token_id=0)
    return {
        "llama": LlamaConfig(**tiny),
        "llama-biases-tied": LlamaConfig(**tiny, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                         tie_word_embeddings=True),
        "llama-head-dim": LlamaConfig(**tiny, num_key_value_heads=1, head_dim=16),
        "mistral": MistralConfig(**tiny, num_key_value_heads=2),
        "qwen2-tied": Qwen2Config(**tiny, num_key_value_heads=2, tie_word_embeddings=True),
        "qwen3-bias": Qwen3Config(**tiny, num_key_value_heads=2, head_dim=8, attention_bias=True),
        "glm": GlmConfig(**tiny, num_key_value_heads=2, head_dim=8),
        "glm-no-bias": GlmConfig(**tiny, num_key_value_heads=2, head_dim=8, attention_bias=False),
    }


@pytest.mark.parametrize("name", list(_configs()))
def test_tensor_table_is_what_transformers_builds(name):
    from transformers import AutoModelForCausalLM

    config = _configs()[name]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    built = [(gguf_name(n), tuple(reversed(p.shape))) for n, p in model.named_parameters()]
    table = tensor_shapes(config)
    assert None not in dict(built)
    assert sorted(table) == sorted(built)


def test_gguf_head_width_is_key_length_else_hidden_over_heads():
    base = {"general.architecture": "llama", "llama.embedding_length": 64, "llama.attention.head_count": 4,
            "llama.rope.dimension_count": 8}
    _, cfg, derived = gguf_native_config(base.get)
    assert (cfg["head_dim"], cfg["num_key_value_heads"]) == (16, 4) and set(derived) == {"head_dim", "num_key_value_heads"}
    stated = base | {"llama.attention.key_length": 32, "llama.attention.head_count_kv": 2}
    _, cfg, derived = gguf_native_config(stated.get)
    assert (cfg["head_dim"], cfg["num_key_value_heads"]) == (32, 2) and derived == ()


@pytest.mark.parametrize("name", ["llama", "llama-head-dim", "glm"])
def test_exported_hyperparameters_read_back_as_the_native_config(name, tmp_path):
    """What the exporter writes, read through the one metadata mapping, is the config it was written from."""
    import gguf

    from llm_compare.families.tensors import head_dim, kv_heads
    from llm_compare.loading.gguf.plan import ExportPlan, write_hparams

    config = _configs()[name]
    arch = {"llama": "llama", "glm": "chatglm"}[config.model_type]
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), arch)
    write_hparams(writer, ExportPlan(arch, config, tmp_path, None, None, None), 64)
    metadata = {key: field.value for key, field in writer.kv_data[0].items()}
    _, cfg, _ = gguf_native_config(metadata.get)
    assert (cfg["head_dim"], cfg["num_key_value_heads"]) == (head_dim(config), kv_heads(config))
    assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (config.hidden_size, config.num_hidden_layers)


def test_every_gguf_reader_takes_the_same_head_width():
    """The Architecture tab, the fast GGUF -> transformers conversion and llama.cpp's key agree on the
    embedded model; a file rotating part of each head is left to transformers' own conversion."""
    from llm_compare.architecture.read_gguf import read_gguf
    from llm_compare.loading import embedded_path
    from llm_compare.loading.gguf.header import check_gguf
    from llm_compare.loading.gguf.unpack import VOCAB_KEYS, llama_config, not_covered

    path = embedded_path("smollm2")
    header = check_gguf(path, VOCAB_KEYS)
    meta = header.metadata
    expected = meta.get("llama.attention.key_length") or meta["llama.embedding_length"] // meta["llama.attention.head_count"]
    assert read_gguf(path).config["head_dim"] == llama_config(header).head_dim == expected
    partial = type(header)(header.version, header.tensors, header.data_start,
                           meta | {"llama.rope.dimension_count": expected // 2})
    assert "rope on" in not_covered(partial)


def test_no_module_branches_on_a_seed_family():
    """What is special about ChatGLM3 and Qwen-1 lives in their descriptions (llm_compare/families/)."""
    branch = re.compile(r"kind\s*(==|!=|(not\s+)?in)\s*\(?[^)\n]*[\"'](chatglm3|qwen)[\"']")
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in sorted(PACKAGE.rglob("*.py"))
             if "families" not in path.parts
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if branch.search(line)]
    assert found == []
