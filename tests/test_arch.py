"""Architecture facts against the models themselves: parameter counts per part equal the loaded
models' element counts, and KV-cache bytes per token equal what a forward pass caches."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LEGACY_FIXTURES
from llm_compare.architecture import KEYS, describe
from llm_compare.architecture.tensors import PARTS
from llm_compare.loading import load_model
from llm_compare.specs import ModelSpec

CHATGLM3 = LEGACY_FIXTURES / "chatglm3-6b-tiny"
QWEN = LEGACY_FIXTURES / "qwen-7b-chat-tiny"
needs_fixtures = pytest.mark.skipif(not LEGACY_FIXTURES.is_dir(), reason="legacy fixtures not present")


def loaded_parts(model) -> dict[str, int]:
    """Element counts of a loaded transformers model by part (a tied lm_head is listed once, as embeddings)."""
    parts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        if "embed_tokens" in name:
            key = "embeddings"
        elif name.startswith("lm_head"):
            key = "output_head"
        elif "norm" in name:
            key = "norms"
        elif ".self_attn." in name:
            key = "attention"
        elif ".mlp." in name:
            key = "mlp"
        else:
            key = name  # anything unexpected makes the comparison fail visibly
        parts[key] = parts.get(key, 0) + p.numel()
    return parts


def assert_counts_match(facts: dict, model) -> None:
    parts = loaded_parts(model)
    assert facts["params_total"] == sum(p.numel() for p in model.parameters())
    assert {k: facts[f"params_{k}"] for k in PARTS} == parts


def spec(source, dtype="float32") -> ModelSpec:
    return ModelSpec(name="m", source=str(source), dtype=dtype)


def test_tiny_native_model_counts(tiny_model_dir):
    facts = describe(spec(tiny_model_dir))
    assert_counts_match(facts, load_model(spec(tiny_model_dir)).model)
    assert (facts["attention_heads"], facts["kv_heads"]) == (4, 2)
    assert facts["attention_kind"].startswith("GQA (2 KV groups")
    assert facts["transformers_class"] == "LlamaForCausalLM"


@needs_fixtures
@pytest.mark.parametrize("fixture", [CHATGLM3, QWEN], ids=["chatglm3", "qwen"])
def test_legacy_fixture_counts(fixture):
    facts = describe(spec(fixture))
    assert_counts_match(facts, load_model(spec(fixture)).model)
    assert facts["decoder_only"] is True


def stored_shape(directory, name: str) -> tuple[int, ...]:
    """A tensor's shape as the checkpoint stores it (safetensors header, or a .bin shard memory-mapped)."""
    index = next(directory.glob("*.index.json"), None)
    shard = directory / (json.loads(index.read_text())["weight_map"][name] if index else "model.safetensors")
    if shard.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(shard, "pt") as f:
            return tuple(f.get_slice(name).get_shape())
    return tuple(torch.load(shard, mmap=True, weights_only=True)[name].shape)


def test_widths_of_a_native_model_and_a_gguf_are_their_mlp_tensors_shapes(tiny_model_dir):
    """(hidden, MLP width) from config.json or the GGUF header's metadata, never the weights, equal the
    down projection's stored shape."""
    from llm_compare.architecture.sources import source_widths
    from llm_compare.loading import embedded_path
    from llm_compare.loading.memory import gguf_tensor_shapes

    assert source_widths(str(tiny_model_dir)) == stored_shape(tiny_model_dir, "model.layers.0.mlp.down_proj.weight")
    down = gguf_tensor_shapes(embedded_path("smollm2"))["blk.0.ffn_down.weight"]  # innermost first: [mlp, hidden]
    assert source_widths("embedded:smollm2") == down[::-1]


@needs_fixtures
@pytest.mark.parametrize("fixture, down", [(CHATGLM3, "transformer.encoder.layers.0.mlp.dense_4h_to_h.weight"),
                                           (QWEN, "transformer.h.0.mlp.c_proj.weight")], ids=["chatglm3", "qwen"])
def test_widths_of_a_seed_checkpoint_are_its_mlp_tensors_shapes(fixture, down):
    """The seed formats' own config keys: ChatGLM3's ffn_hidden_size, Qwen-1's intermediate_size that
    counts both halves of its gated MLP (the width is half of it)."""
    from llm_compare.architecture.sources import source_widths

    assert source_widths(str(fixture)) == stored_shape(fixture, down)  # [hidden, mlp]


def test_embedded_gguf_counts(embedded_backend):
    facts = describe(ModelSpec(name="e", source="embedded:smollm2"))
    assert_counts_match(facts, embedded_backend.model)
    assert facts["tied_embeddings"] is True and facts["params_output_head"] == 0
    assert facts["weights_bytes"]["this file"] == facts["file_bytes"] > 0


NATIVE_CLASSES = {  # model_type: extra config fields; each exercises one branch of the tensor table
    "qwen2": {},
    "qwen3": {"head_dim": 24},
    "glm": {"partial_rotary_factor": 0.5, "attention_bias": True, "head_dim": 16, "pad_token_id": 0},
    "mistral": {"tie_word_embeddings": True},
    "llama": {"attention_bias": True, "mlp_bias": True},
}


@pytest.mark.parametrize("model_type", NATIVE_CLASSES)
def test_native_classes_counts(tmp_path, model_type):
    """The config-only count equals the element count of the model transformers builds from it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=64, intermediate_size=80,
                                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  **NATIVE_CLASSES[model_type])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    config.save_pretrained(tmp_path)  # config only: the facts never need weights
    facts = describe(spec(tmp_path))
    assert_counts_match(facts, model)


def forward_cache_bytes(model, tokens: int) -> tuple[int, int]:
    """(bytes, values) of the K/V tensors the cache holds after one forward pass over `tokens` tokens."""
    with torch.no_grad():
        out = model(input_ids=torch.ones(1, tokens, dtype=torch.long), use_cache=True)
    layers = out.past_key_values.layers
    nbytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)
    return nbytes, sum(layer.keys.numel() + layer.values.numel() for layer in layers)


@pytest.mark.parametrize("which", ["tiny", "chatglm3", "qwen"])
def test_kv_cache_bytes_per_token_match_a_forward_pass(which, tiny_model_dir):
    source = {"tiny": tiny_model_dir, "chatglm3": CHATGLM3, "qwen": QWEN}[which]
    if which != "tiny" and not LEGACY_FIXTURES.is_dir():
        pytest.skip("legacy fixtures not present")
    model = load_model(spec(source, "bfloat16")).model
    per_token = describe(spec(source))["kv_cache_bytes_per_token"]
    one, _ = forward_cache_bytes(model, 1)
    three, _ = forward_cache_bytes(model, 3)
    assert one == per_token
    assert three == 3 * per_token


def test_kv_cache_of_the_embedded_gguf(embedded_backend):
    _, values = forward_cache_bytes(embedded_backend.model, 1)  # float32 model: count values, 2 bytes each
    assert 2 * values == describe(ModelSpec(name="e", source="embedded:smollm2"))["kv_cache_bytes_per_token"]


@needs_fixtures
def test_real_seed_sizes_from_their_configs(tmp_path):
    """The seed models' published widths give the parameter totals docs/legacy-weights.md states."""
    real = {CHATGLM3: dict(hidden_size=4096, ffn_hidden_size=13696, kv_channels=128, num_attention_heads=32,
                           multi_query_group_num=2, num_layers=28, padded_vocab_size=65024),
            QWEN: dict(hidden_size=4096, intermediate_size=22016, kv_channels=128, num_attention_heads=32,
                       num_hidden_layers=32, vocab_size=151936)}
    totals = {}
    for fixture, widths in real.items():
        target = tmp_path / fixture.name
        target.mkdir()
        cfg = json.loads((fixture / "config.json").read_text()) | widths
        (target / "config.json").write_text(json.dumps(cfg))
        facts = describe(spec(target))
        totals[fixture.name] = facts["params_total"]
        assert facts["kv_cache_bytes_per_token"] == 2 * 2 * facts["layers"] * facts["kv_heads"] * 128
    assert totals == {CHATGLM3.name: 6_243_584_000, QWEN.name: 7_721_324_544}


def test_stable_json_keys(tiny_model_dir):
    facts = describe(spec(tiny_model_dir))
    for key in ("params_total", "layers", "hidden_size", "attention_heads", "kv_heads", "attention_kind",
                "head_dim", "ffn_size", "vocab_size", "context_length", "rope_fraction",
                "kv_cache_bytes_per_token", "tokens_per_char_seed_prompts"):
        assert key in facts
    assert list(facts)[: len(KEYS)] == list(KEYS)
    json.dumps(facts)  # serialisable as is
    assert facts["tokens_per_char_seed_prompts"] > 0
    assert len(facts["seed_prompt_tokens"]) == 5


def test_other_transformers_classes_get_their_total(tmp_path):
    """A class the tensor table does not describe (GPT-2: LayerNorm, fused qkv, learned positions)
    still gets its total, counted on the meta device, equal to the real model's element count."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    config.save_pretrained(tmp_path)
    facts = describe(spec(tmp_path))
    assert facts["params_total"] == sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    assert (facts["layers"], facts["hidden_size"], facts["attention_heads"]) == (2, 32, 4)  # GPT-2 spellings
    assert facts["params_attention"] is None and facts["missing"]["params_attention"] == "unknown"
