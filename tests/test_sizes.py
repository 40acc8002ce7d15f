"""The one size model (loading/size_model.py) against GGUF files llama.cpp itself quantized.

Tiny but realistic Llama / Qwen2 directories go through the project's exporter to an f16 GGUF, then
through llama.cpp's own quantizer (`llama_model_quantize`, its default parameters) to q8_0 and
q4_k_m. The header of each file llama.cpp wrote says every tensor's type and so its bytes; the size
model, working from the directory's config.json alone, must predict the same types and the same
tensor bytes (within SIZE_TOLERANCE) — for the RAM check, the export's disk check and the
Architecture tab, which all read it.
"""

from __future__ import annotations

import ctypes
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from conftest import LEGACY_FIXTURES, build_tiny_chat_model
from llm_compare.architecture.facts import describe
from llm_compare.backends.llamacpp_exported import kv_cache_kwargs
from llm_compare.loading import resolve_source
from llm_compare.loading.gguf.export import exported_gguf, needs
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.gguf.plan import plan_export
from llm_compare.loading.gguf.write import write_gguf
from llm_compare.loading.memory import count_gguf, count_parameters, estimate
from llm_compare.loading.size_model import GGML_TYPES, tensor_types
from llm_compare.specs import ModelSpec

SIZE_TOLERANCE = 0.02
CASES = {
    # rows of 256 and 512: whole q4_K blocks; 8 layers, so llama.cpp's layer rule gives attn_v / ffn_down
    # Q6_K in some layers and Q4_K in others; grouped-query attention
    "llama": (LlamaConfig, LlamaForCausalLM, dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                                                  num_attention_heads=4, num_key_value_heads=2)),
    # tied embeddings (llama.cpp gives them the output head's type) and q/k/v biases (never quantized)
    "qwen2-tied": (Qwen2Config, Qwen2ForCausalLM, dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                                                       num_attention_heads=4, num_key_value_heads=2,
                                                       tie_word_embeddings=True)),
    # rows of 320 and 864, no multiple of 256: llama.cpp falls back from Q4_K / Q6_K to Q5_0 / Q8_0
    "llama-ragged": (LlamaConfig, LlamaForCausalLM, dict(hidden_size=320, intermediate_size=864,
                                                         num_hidden_layers=4, num_attention_heads=5,
                                                         num_key_value_heads=5)),
}
FTYPES = ("q8_0", "q4_k_m")


def build_model(directory, config_class, model_class, shape: dict):
    """A random-weight chat model directory (the tests' tokenizer) at these widths, in bfloat16."""
    build_tiny_chat_model(directory)
    old = json.loads((directory / "config.json").read_text())
    torch.manual_seed(0)
    config = config_class(vocab_size=old["vocab_size"], max_position_embeddings=256, eos_token_id=old["eos_token_id"],
                          pad_token_id=old["pad_token_id"], bos_token_id=None, **shape)
    model_class(config).to(torch.bfloat16).save_pretrained(directory)
    return directory


def llama_cpp_quantize(source, target, ftype: str) -> None:
    """llama.cpp's own quantizer with its default parameters (as its `llama-quantize` tool runs it)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}")
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) == 0


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """{case: {"dir", "f16", "q8_0", "q4_k_m"}}: each directory, its f16 export, llama.cpp's quantizations."""
    out = {}
    for name, (config_class, model_class, shape) in CASES.items():
        root = tmp_path_factory.mktemp(name)
        directory = build_model(root / "model", config_class, model_class, shape)
        files = {"dir": directory, "f16": root / "f16.gguf"}
        write_gguf(plan_export(resolve_source(str(directory))), files["f16"], "f16")
        for ftype in FTYPES:
            files[ftype] = root / f"{ftype}.gguf"
            llama_cpp_quantize(files["f16"], files[ftype], ftype)
        out[name] = files
    return out


def file_types(path) -> dict[str, str]:
    names = {t.id: t.name for t in GGML_TYPES.values()}
    return {t.name: names[t.ggml_type] for t in check_gguf(path).tensors}


def data_bytes(path) -> int:
    return sum(t.nbytes() for t in check_gguf(path).tensors)


def error(predicted: int, real: int) -> float:
    return abs(predicted - real) / real


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ("f16", *FTYPES))
def test_types_and_bytes_match_what_llama_cpp_wrote(quantized, case, kind):
    files = quantized[case]
    config = json.loads((files["dir"] / "config.json").read_text())
    table = count_parameters(config).table
    assert table == count_gguf(files["f16"]).table  # the config's tensor table is what the exporter wrote
    assert tensor_types(table, kind) == file_types(files[kind])
    predicted = estimate(str(files["dir"]), f"gguf-{kind}").weights_bytes  # the RAM check's figure
    assert error(predicted, data_bytes(files[kind])) <= SIZE_TOLERANCE


def test_ragged_rows_take_llama_cpps_fallback_types(quantized):
    """The ragged case really exercises the fallbacks (else the test above would not cover them)."""
    written = set(file_types(quantized["llama-ragged"]["q4_k_m"]).values())
    assert {"q5_0", "q8_0"} <= written and "q4_k" not in written


@pytest.mark.parametrize("dtype", ("gguf-q8_0", "gguf-q4_k_m"))
def test_the_projects_exports_match_their_estimate_and_disk_check(quantized, dtype):
    """The app's own export (writer + llama.cpp's quantizer from the bfloat16 checkpoint): its tensor bytes
    are the RAM estimate's, and the disk check asked for at least the file it wrote."""
    directory = quantized["llama-ragged"]["dir"]
    source = resolve_source(str(directory))
    path = exported_gguf(source, dtype)
    assert error(estimate(str(directory), dtype).weights_bytes, data_bytes(path)) <= SIZE_TOLERANCE
    assert needs(plan_export(source), dtype)[0] >= path.stat().st_size


@pytest.mark.parametrize("fixture", ("chatglm3-6b-tiny", "qwen-7b-chat-tiny"))
def test_seed_checkpoint_exports_match_their_estimate(fixture):
    """The seed formats' raw configs (ChatGLM3: gate and up fused in one tensor; Qwen-1: the MLP width
    counted twice) size the files the project exports from them."""
    directory = LEGACY_FIXTURES / fixture
    path = exported_gguf(resolve_source(str(directory)), "gguf-q4_k_m")  # its mix of types: the strictest check
    assert error(estimate(str(directory), "gguf-q4_k_m").weights_bytes, data_bytes(path)) <= SIZE_TOLERANCE


def test_architecture_tab_states_the_same_sizes(quantized):
    files = quantized["qwen2-tied"]
    facts = describe(ModelSpec(name="m", source=str(files["dir"])))
    for kind in FTYPES:
        assert error(facts["weights_bytes"][f"gguf-{kind}"], data_bytes(files[kind])) <= SIZE_TOLERANCE


def test_the_ggml_type_table_matches_the_gguf_package():
    """Block sizes and bytes per block as the gguf package (llama.cpp's own Python) states them."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for kind in GGML_TYPES.values():
        assert GGMLQuantizationType(kind.id).name.lower() == kind.name
        assert GGML_QUANT_SIZES[GGMLQuantizationType(kind.id)] == (kind.block, kind.block_bytes)


def kv_values(shape: dict) -> int:
    """K and V values one token caches: every layer, every KV head, head_dim each."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim


def test_reserved_context_caps_the_kv_cache_on_every_path(quantized):
    """llama.cpp never reserves more than the model's trained context (256 tokens here), however large
    its `context`: for a .gguf file, a directory at a gguf-* dtype, and a config dict at one."""
    files, shape = quantized["llama"], CASES["llama"][2]
    config = json.loads((files["dir"] / "config.json").read_text())
    trained = config["max_position_embeddings"]
    f16_bytes = kv_values(shape) * trained * 2  # an f16 cache: two bytes per value
    assert estimate(str(files["q8_0"]), backend="llamacpp", context=8192).kv_bytes == f16_bytes
    assert estimate(str(files["q8_0"]), "gguf-f16", context=8192).kv_bytes == f16_bytes
    assert estimate(str(files["dir"]), "gguf-f16", context=8192).kv_bytes == f16_bytes
    assert estimate(config, "gguf-f16", context=8192).kv_bytes == f16_bytes
    assert estimate(config, "gguf-f16", context=trained // 2).kv_bytes == f16_bytes // 2  # below the cap: as asked


@pytest.mark.parametrize("head_dim", (64, 48))
def test_an_exports_kv_cache_is_sized_in_the_type_llama_cpp_is_opened_with(head_dim):
    """q8_0 for heads of whole q8_0 blocks (32 values), f16 otherwise: the estimate and the backend agree."""
    shape = dict(hidden_size=4 * head_dim, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    config = {"model_type": "llama", "vocab_size": 512, "intermediate_size": 512, "max_position_embeddings": 4096,
              **shape}
    opened = kv_cache_kwargs("gguf-q4_k_m", head_dim)["type_k"]
    per_value = {1: 2, 8: 34 / 32}[opened]  # ggml's f16, and q8_0: an f16 scale + 32 int8 values per block
    assert estimate(config, "gguf-q4_k_m", context=1024).kv_bytes == kv_values(shape) * 1024 * per_value
