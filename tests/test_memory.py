"""Size estimates from configs, the RAM check, int8 weights, and load-on-demand in the pool."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    GlmConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from llm_compare.errors import UserError
from llm_compare.loading.memory import (
    GiB,
    check_fits,
    count_parameters,
    estimate,
    estimate_bytes,
)
from llm_compare.loading.quantize import Int8Linear, quantize_int8
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import CONTEXT_TOKENS, ModelSpec

from conftest import LEGACY_FIXTURES as FIXTURES  # noqa: E402

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not present")

# The real seed configs (size fields as published; no weights needed to count their parameters)
CHATGLM3_6B = {
    "model_type": "chatglm", "padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696,
    "num_layers": 28, "num_attention_heads": 32, "multi_query_attention": True, "multi_query_group_num": 2,
    "kv_channels": 128, "add_qkv_bias": True, "add_bias_linear": False, "seq_length": 8192,
}
QWEN_7B_CHAT = {
    "model_type": "qwen", "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
    "num_hidden_layers": 32, "num_attention_heads": 32, "kv_channels": 128, "no_bias": True,
    "tie_word_embeddings": False,
}


def test_seed_parameter_counts_match_the_published_sizes():
    assert count_parameters(CHATGLM3_6B).total == 6_243_584_000
    assert count_parameters(QWEN_7B_CHAT).total == 7_721_324_544
    assert estimate(CHATGLM3_6B, "bfloat16").weights_bytes == 12_487_168_000  # 12.49 GB
    assert estimate(QWEN_7B_CHAT, "bfloat16").weights_bytes == 15_442_649_088  # 15.44 GB


# int8 bytes worked out by hand: 1 byte a linear weight + a bf16 scale per output row, the rest bf16.
# ChatGLM3-6B, 28 layers: linears (qkv 4096->4608, dense 4096->4096, 4096->2x13696, 13696->4096)
# 5_710_544_896 weights in 1_125_376 rows; the rest (embedding and output layer 65024x4096 each,
# 57 norms of 4096, qkv biases 28x4608) 533_039_104 -> 5_710_544_896 + 2 x 1_125_376 + 2 x 533_039_104.
# Qwen-7B-Chat, 32 layers: linears (c_attn 4096->12288, c_proj 4096->4096, w1 and w2 4096->11008,
# mlp c_proj 11008->4096) 6_476_005_376 weights in 1_359_872 rows; the rest (151936x4096 twice,
# 65 norms, c_attn biases 32x12288) 1_245_319_168.
INT8_BYTES = {"chatglm3-6b": 6_778_873_856, "qwen-7b-chat": 8_969_363_456}


def test_int8_halves_the_linear_layers_and_keeps_embeddings_16_bit():
    for name, config in (("chatglm3-6b", CHATGLM3_6B), ("qwen-7b-chat", QWEN_7B_CHAT)):
        bf16, int8, fp32 = (estimate(config, d) for d in ("bfloat16", "int8", "float32"))
        assert int8.weights_bytes == INT8_BYTES[name]
        assert fp32.weights_bytes == 2 * bf16.weights_bytes
        assert int8.resident_bytes < bf16.resident_bytes < fp32.resident_bytes
        assert int8.peak_bytes == bf16.peak_bytes  # int8 loads bf16 weights first
        assert estimate_bytes(config, "int8") == int8.resident_bytes
    # both seeds in bf16 do not fit 24 GiB; both in int8 do
    pair = lambda d: estimate_bytes(CHATGLM3_6B, d) + estimate_bytes(QWEN_7B_CHAT, d)  # noqa: E731
    assert pair("bfloat16") > 24 * GiB > pair("int8")


TINY = dict(vocab_size=151_400, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig(**TINY, num_key_value_heads=2),
        LlamaConfig(**TINY, num_key_value_heads=4, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
        LlamaConfig(**TINY, num_key_value_heads=2, head_dim=16),
        Qwen2Config(**TINY, num_key_value_heads=2),
        Qwen2Config(**TINY, num_key_value_heads=2, tie_word_embeddings=True),
        GlmConfig(**TINY, num_key_value_heads=2, head_dim=8),
        GlmConfig(**TINY, num_key_value_heads=2, head_dim=8, attention_bias=False),
        Qwen3Config(**TINY, num_key_value_heads=2, head_dim=8),
    ],
    ids=["llama", "llama-tied-bias", "llama-head-dim", "qwen2", "qwen2-tied", "glm", "glm-nobias", "qwen3"],
)
def test_counts_from_native_configs_equal_the_built_models(config):
    model = AutoModelForCausalLM.from_config(config)
    count = count_parameters(json.loads(config.to_json_string()))
    assert count.total == sum(p.numel() for p in model.parameters())
    lm_head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not lm_head]
    assert count.linear == sum(m.weight.numel() for m in linears)
    assert count.linear_rows == sum(m.out_features for m in linears)


def _fixture_numel(directory: Path) -> int:
    """Parameters in the weight files the checkpoint's index names."""
    index = json.loads(next(directory.glob("*.index.json")).read_text())
    total = 0
    for f in sorted({directory / name for name in index["weight_map"].values()}):
        if f.suffix == ".safetensors":
            with safe_open(f, "pt") as st:
                total += sum(_prod(st.get_slice(k).get_shape()) for k in st.keys())
        else:
            state = torch.load(f, map_location="cpu", weights_only=True)
            total += sum(t.numel() for k, t in state.items() if not k.endswith("inv_freq"))
    return total


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@needs_fixtures
@pytest.mark.parametrize("name", ["chatglm3-6b-tiny", "qwen-7b-chat-tiny"])
def test_counts_from_legacy_configs_equal_the_fixture_weights(name):
    directory = FIXTURES / name
    config = json.loads((directory / "config.json").read_text())
    assert count_parameters(config).total == _fixture_numel(directory)
    # and through a path, as the doctor and the pool see it
    assert estimate(str(directory), "bfloat16").params == _fixture_numel(directory)


def test_gguf_is_sized_from_its_tensor_table():
    est = estimate("embedded:smollm2", "bfloat16")
    assert est.params == 134_515_008  # SmolLM2-135M, tied embeddings
    llama = estimate("embedded:smollm2", "bfloat16", backend="llamacpp")
    from llm_compare.loading import embedded_path

    assert llama.weights_bytes == embedded_path("smollm2").stat().st_size
    assert estimate("embedded:smollm2", "bfloat16", backend="openai") is None


def test_llamacpp_kv_cache_is_sized_by_the_models_context_and_cache_type():
    """llama.cpp reserves its whole context at load: the estimate grows with `context` by the KV
    cache's own size per token (f16 for the quantized exports, float32 for gguf-f32)."""
    assert count_parameters(QWEN_7B_CHAT).kv_per_token == 262_144  # K and V x 32 layers x 32 heads of 128
    # 2048 more tokens: 262_144 values a token; f16 stores 2 bytes a value, f32 4
    q4 = {n: estimate(QWEN_7B_CHAT, "gguf-q4_k_m", context=n).resident_bytes for n in (2048, 4096)}
    assert q4[4096] - q4[2048] == 1_073_741_824  # 2048 x 262_144 x 2
    f32 = {n: estimate(QWEN_7B_CHAT, "gguf-f32", context=n).resident_bytes for n in (2048, 4096)}
    assert f32[4096] - f32[2048] == 2_147_483_648  # 2048 x 262_144 x 4
    default = estimate(QWEN_7B_CHAT, "gguf-q4_k_m", context=CONTEXT_TOKENS).resident_bytes
    assert estimate(QWEN_7B_CHAT, "gguf-q4_k_m").resident_bytes == default
    small = estimate("embedded:smollm2", backend="llamacpp", context=256).resident_bytes
    assert estimate("embedded:smollm2", backend="llamacpp", context=8192).resident_bytes > small


@needs_fixtures
def test_check_fits_refuses_with_numbers_and_a_way_out(monkeypatch):
    monkeypatch.delenv("LLM_COMPARE_NO_MEMORY_CHECK", raising=False)
    source = str(FIXTURES / "qwen-7b-chat-tiny")
    spec = ModelSpec(name="qwen-tiny", source=source, label="Qwen tiny", dtype="float32")
    est = check_fits(spec, available=64 * GiB)
    assert est is not None and est.params > 0
    bf16 = estimate(source, "bfloat16")
    with pytest.raises(UserError) as err:
        check_fits(spec, available=bf16.peak_bytes)  # float32 does not fit, bfloat16 does
    msg = str(err.value)
    assert msg.startswith(f"Qwen tiny needs ≈{est.peak_bytes / GiB:.1f} GiB in float32 but")
    assert f"use dtype bfloat16 (≈{bf16.resident_bytes / GiB:.1f} GiB)" in msg and "\n" not in msg
    int8 = ModelSpec(name="q8", source=source, label="Qwen tiny", dtype="int8")
    with pytest.raises(UserError, match="in int8 while loading .* after.*close other programs"):
        check_fits(int8, available=bf16.peak_bytes - 1)  # int8 loads bf16 weights first
    monkeypatch.setenv("LLM_COMPARE_NO_MEMORY_CHECK", "1")
    assert check_fits(spec, available=0) is None
    remote = ModelSpec(name="r", source="http://localhost:1/v1", backend="openai")
    monkeypatch.delenv("LLM_COMPARE_NO_MEMORY_CHECK")
    assert check_fits(remote, available=0) is None


@needs_fixtures
def test_check_fits_counts_models_already_loaded(monkeypatch):
    monkeypatch.delenv("LLM_COMPARE_NO_MEMORY_CHECK", raising=False)

    class Loaded:  # what check_fits reads from a backend: its spec and its measured size
        spec = ModelSpec(name="big", source=str(FIXTURES / "chatglm3-6b-tiny"), label="Big one")
        resident_bytes = 10**15  # it holds everything

    spec = ModelSpec(name="qwen-tiny", source=str(FIXTURES / "qwen-7b-chat-tiny"))
    with pytest.raises(UserError, match="Big one already loaded.*load one model at a time"):
        check_fits(spec, loaded=[Loaded()])
    Loaded.resident_bytes = 0  # now sized by its estimate, which leaves room
    assert check_fits(spec, loaded=[Loaded()]) is not None


def test_bad_path_is_a_user_error_not_a_crash():
    with pytest.raises(UserError, match="does not exist"):
        estimate("/nonexistent/model", "bfloat16")


def _tiny_llama(hidden=64, vocab=256, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("in_features", [64, 40])  # fused kernel (multiple of 16) and the fallback
def test_int8_linear_matches_its_dequantised_weights(in_features):
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, 24, bias=True)
    original = linear.weight.detach().clone()
    q = Int8Linear(linear)
    assert torch.equal(linear.weight, original)  # quantizing reads the weight, never changes it
    assert q.qweight.dtype == torch.int8 and q.fused == (in_features % 16 == 0)
    dequant = q.qweight.float() * q.scales.float()[:, None]
    assert (dequant - linear.weight).abs().max() <= q.scales.float().max() / 2 + 1e-6  # rounding error only
    x = torch.randn(3, 5, in_features, dtype=torch.bfloat16)
    ref = torch.nn.functional.linear(x.float(), dequant, linear.bias.float())
    out = q(x)
    assert out.shape == (3, 5, 24) and out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    x_view = torch.randn(2, 7, in_features + 1, dtype=torch.bfloat16)[..., 1:]  # unaligned, strided input
    ref_view = torch.nn.functional.linear(x_view.float(), dequant, linear.bias.float())
    assert (q(x_view).float() - ref_view).abs().max() < 0.05 * ref_view.abs().max()


def test_quantize_int8_keeps_logits_close_and_halves_linear_memory():
    model = _tiny_llama()
    ids = torch.randint(0, 256, (1, 12))
    lm_head = model.get_output_embeddings()
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not lm_head)
    with torch.no_grad():
        ref = model.to(torch.float32)(ids).logits
        bf16_bytes = sum(p.numel() * 2 for p in model.parameters())
        quantize_int8(model)
        out = model(ids).logits.float()
    assert isinstance(lm_head, torch.nn.Linear) and lm_head.weight.dtype == torch.bfloat16
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not lm_head]
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2 * 7
    int8_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
                     if t.dtype != torch.float32)  # rotary inv_freq stays float32 and is not a weight
    assert int8_bytes == estimate(json.loads(model.config.to_json_string()), "int8").weights_bytes
    assert int8_bytes < bf16_bytes - linear_weights // 2
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 17)


# ---- load-on-demand ---------------------------------------------------------------------------


def _save_tiny_model(directory: Path, seed: int) -> Path:
    """A tiny Llama with a word-level tokenizer: small enough to load in well under a second."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(62)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    model = _tiny_llama(hidden=32, vocab=64, seed=seed)
    model.config.eos_token_id = 1
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def _answer(backend) -> str:
    params = GenerationParams(max_new_tokens=4, greedy=True, temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=0)
    chunks = backend.stream([{"role": "user", "content": "w3 w4 w5"}], params, threading.Event())
    return "".join(c.text for c in chunks)


def test_pool_with_max_resident_keeps_one_model_and_records_the_swap(tmp_path):
    specs = [
        ModelSpec(name=f"tiny{i}", source=str(_save_tiny_model(tmp_path / f"m{i}", seed=i)), chat_format="raw",
                  dtype=dtype)
        for i, dtype in ((1, "float32"), (2, "int8"))  # the int8 one streams through Int8Linear
    ]
    pool = ModelPool(max_resident=1)
    first = pool.get(specs[0])
    weights = weakref.ref(first.model)
    assert pool.last_swap is None and _answer(first)
    del first
    second = pool.get(specs[1])
    gc.collect()
    assert weights() is None  # the first model's weights were freed, not just forgotten
    assert pool.is_loaded(specs[1]) and not pool.is_loaded(specs[0]) and len(pool.loaded()) == 1
    assert pool.last_swap.unloaded == ["tiny1"] and pool.last_swap.loaded == "tiny2"
    assert pool.last_swap_seconds == pool.last_swap.unload_seconds + pool.last_swap.load_seconds > 0
    assert _answer(second) and any(isinstance(m, Int8Linear) for m in second.model.modules())
    assert pool.get(specs[1]) is second  # already resident: no swap
    del second
    again = pool.get(specs[0])
    assert _answer(again) and pool.last_swap.unloaded == ["tiny2"] and len(pool.loaded()) == 1


def test_pool_without_limit_keeps_both(tmp_path):
    specs = [ModelSpec(name=f"t{i}", source=str(_save_tiny_model(tmp_path / f"m{i}", seed=i)), chat_format="raw")
             for i in (1, 2)]
    pool = ModelPool()
    a, b = pool.get(specs[0]), pool.get(specs[1])
    assert len(pool.loaded()) == 2 and pool.last_swap is None and _answer(a) and _answer(b)


def test_gguf_header_reader_agrees_with_the_gguf_package(tmp_path):
    from gguf import GGUFReader

    from llm_compare.loading import embedded_path
    from llm_compare.loading.memory import count_gguf, gguf_tensor_shapes

    path = embedded_path("smollm2")
    expected = {t.name: tuple(int(d) for d in t.shape) for t in GGUFReader(str(path)).tensors}
    assert gguf_tensor_shapes(path) == expected
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes()[:5000])  # cut inside the metadata
    with pytest.raises(UserError, match="ends inside its GGUF header"):
        count_gguf(broken)
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match="not a readable GGUF file"):
        count_gguf(broken)


def test_pool_refuses_a_model_that_cannot_fit_before_reading_weights(tmp_path, monkeypatch):
    from llm_compare.loading import memory

    monkeypatch.delenv("LLM_COMPARE_NO_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda loaded=(): 24 * GiB)  # any machine: a 24 GiB box
    (tmp_path / "config.json").write_text(json.dumps(QWEN_7B_CHAT))  # the real size, no weights at all
    pool = ModelPool()
    spec = ModelSpec(name="qwen", source=str(tmp_path), label="Qwen-7B-Chat", dtype="float32")
    with pytest.raises(UserError, match=r"Qwen-7B-Chat needs ≈31\.0 GiB in float32 but .* is available"):
        pool.get(spec)
    assert pool.loaded() == []


def test_gguf_header_keeps_per_layer_numbers_and_skips_the_vocabulary_unless_asked(tmp_path):
    """Small numeric arrays (per-layer head counts of some GGUFs) come with the header; the
    vocabulary (large, strings) only when asked for: the header stays fast to read."""
    import numpy as np
    from gguf import GGUFWriter

    from llm_compare.loading.gguf.header import read_header

    path = tmp_path / "per-layer.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(3)
    writer.add_head_count_kv([4, 4, 2])
    writer.add_token_list([f"t{i}" for i in range(3000)])
    writer.add_array("llama.long_numbers", list(range(5000)))
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    meta = read_header(path).metadata
    assert meta["llama.attention.head_count_kv"] == [4, 4, 2] and meta["llama.block_count"] == 3
    assert "tokenizer.ggml.tokens" not in meta and "llama.long_numbers" not in meta
    asked = read_header(path, arrays=frozenset({"tokenizer.ggml.tokens", "llama.long_numbers"})).metadata
    assert asked["tokenizer.ggml.tokens"][2999] == "t2999" and asked["llama.long_numbers"][-1] == 4999
