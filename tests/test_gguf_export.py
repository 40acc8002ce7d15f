"""gguf-* dtypes: the project's own GGUF export run by llama.cpp, checked against independent references.

- the seed formats (shared legacy fixtures): float32 logits within 1e-3 of the original
  implementations' (reference.json), the same greedy chat replies, the same prompt ids;
- a tiny native Llama-style model: the same against the transformers float32 path in this run;
- quantized types on a model whose widths are multiples of 256: drift against gguf-f32, bounded.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from gguf_helpers import GLM, QWEN, build_wide_model, gguf_logits
from test_legacy_weights import chat_cases, chat_messages, forward_cases  # the same cases as the transformers path
from llm_compare.backends import open_backend
from llm_compare.backends.llamacpp_exported import kv_cache_kwargs
from llm_compare.backends.transformers import TransformersBackend
from llm_compare.engine import stream_reply
from llm_compare.loading import load_model, resolve_source
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.gguf.export import exported_gguf
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

pytestmark = pytest.mark.skipif(not GLM.is_dir(), reason="legacy fixtures not present")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def spec_for(directory, dtype="gguf-f32", **kw) -> ModelSpec:
    return ModelSpec(name=directory.name, source=str(directory), dtype=dtype, **kw)


@pytest.fixture(scope="module")
def exported():
    backends = {d: open_backend(spec_for(d)) for d in (GLM, QWEN)}
    yield backends
    for b in backends.values():
        b.close()


@pytest.mark.parametrize("directory,entry,ids", [*forward_cases(GLM), *forward_cases(QWEN)])
def test_f32_logits_match_original(directory, entry, ids, exported):
    logits = gguf_logits(exported[directory].path, ids, entry["positions"])
    expected = load_file(directory / "reference.safetensors")[entry["logits_key"]]
    assert (logits - expected).abs().max().item() <= 1e-3
    assert logits.argmax(-1).tolist() == entry["argmax_at_positions"]


@pytest.mark.parametrize("directory,conv", list(chat_cases()))
def test_chat_reply_matches_original(directory, conv, exported):
    """Same prompt ids, same greedy reply and token count as the original chat() (and the transformers path)."""
    backend = exported[directory]
    messages = chat_messages(directory, conv)
    assert backend.prompt.encode(messages) == conv["input_ids"]
    stopped = conv["generated_ids"][-1] in backend.prompt.stop_token_ids
    max_new = conv["effective_generation"].get("max_new_tokens", 16)
    params = GenerationParams(max_new_tokens=max_new, greedy=True,
                              repetition_penalty=conv["effective_generation"]["repetition_penalty"])
    last = list(stream_reply(backend, messages, params))[-1]
    ended = stopped and len(conv["generated_ids"]) < max_new
    assert last.finish_reason == ("stop" if ended else "length")
    assert last.metrics.new_tokens == len(conv["generated_ids"]) - (0 if ended else 1)
    assert last.text == conv["reply"]


def test_recommended_settings_are_the_checkpoints(exported):
    """Qwen-1's generation_config.json (repetition_penalty 1.1...) is recommended as on the transformers path."""
    transformers_side = TransformersBackend(spec_for(QWEN, "float32"), load_model(spec_for(QWEN, "float32")))
    assert exported[QWEN].recommended_generation() == transformers_side.recommended_generation()
    assert exported[QWEN].drops_last_token and exported[GLM].drops_last_token


def test_native_llama_model_matches_transformers(tiny_model_dir, tiny_backend):
    """A native Llama directory: q/k rows reordered for llama.cpp's rope; logits, prompt ids and greedy
    reply as the transformers float32 path gives them in this run."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The sky is blue because"}]
    ids = tiny_backend.chat_format.encode(messages)
    with torch.inference_mode():
        expected = tiny_backend.model(torch.tensor([ids])).logits[0]
    backend = open_backend(spec_for(tiny_model_dir))
    try:
        assert backend.prompt.encode(messages) == ids
        # the file carries the directory's chat template (transformers 5 keeps it in chat_template.jinja)
        template = check_gguf(backend.path).metadata.get("tokenizer.chat_template")
        assert template and template == tiny_backend.tokenizer.chat_template
        logits = gguf_logits(backend.path, ids, list(range(len(ids))))
        assert (logits - expected).abs().max().item() <= 1e-3
        params = GenerationParams(max_new_tokens=12, greedy=True)
        ours = list(stream_reply(backend, messages, params))[-1]
        theirs = list(stream_reply(tiny_backend, messages, params))[-1]
        assert (ours.text, ours.metrics.new_tokens) == (theirs.text, theirs.metrics.new_tokens)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    return build_wide_model(tmp_path_factory.mktemp("wide"))


def test_quantized_drift_is_bounded_and_streams(wide_model):
    """q8_0 and q4_k_m (llama.cpp's quantizer) against gguf-f32 on widths that fill whole blocks.
    Measured (random weights, logits within ±5): f16 ≈ 0.008, q8_0 ≈ 0.2, q4_k_m ≈ 2 max |Δlogit|."""
    model = load_model(spec_for(wide_model, "float32"))
    ids = model.chat_format.encode([{"role": "user", "content": "Write a short poem about the sea."}])
    positions = list(range(len(ids)))
    source = resolve_source(str(wide_model))
    f32 = gguf_logits(exported_gguf(source, "gguf-f32"), ids, positions)
    scale = f32.abs().max().item()
    drift = {t: (gguf_logits(exported_gguf(source, t), ids, positions) - f32).abs().max().item() / scale
             for t in ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m")}
    print("relative max logit drift vs gguf-f32:", drift)
    assert 0 < drift["gguf-f16"] < drift["gguf-q8_0"] < drift["gguf-q4_k_m"]
    assert drift["gguf-f16"] < 0.01 and drift["gguf-q8_0"] < 0.1 and drift["gguf-q4_k_m"] < 0.75
    backend = open_backend(spec_for(wide_model, "gguf-q4_k_m"))
    try:
        updates = list(stream_reply(backend, [{"role": "user", "content": "Hi"}], GenerationParams(max_new_tokens=8)))
        assert updates[-1].done and updates[-1].metrics.new_tokens >= 1
        assert "".join(u.delta for u in updates[:-1]) == updates[-2].text
    finally:
        backend.close()


def test_quantized_types_keep_an_f16_kv_cache_whose_drift_is_small(wide_model):
    """gguf-f16 / gguf-q8_0 / gguf-q4_k_m run with an f16 KV cache without flash attention, as llama.cpp
    does by default (a q8_0 cache needs flash attention, slower on a CPU at long context); the cache
    adds far less drift than the weights' own."""
    f16 = {"type_k": 1, "type_v": 1, "flash_attn": False}
    for dtype in ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m"):
        assert kv_cache_kwargs(dtype, 64) == kv_cache_kwargs(dtype, 16) == f16
    assert kv_cache_kwargs("gguf-f32", 64) == {"type_k": 0, "type_v": 0, "flash_attn": False}
    backend = open_backend(spec_for(wide_model, "gguf-q4_k_m"))
    try:
        assert backend.open_kwargs == kv_cache_kwargs("gguf-q4_k_m", 64)  # 256 wide, 4 heads
        assert backend.n_ctx == backend.context_length == 256  # trained for 256: no cache beyond it
        ids = backend.prompt.encode([{"role": "user", "content": "Write a short poem about the sea."}])
    finally:
        backend.close()
    positions = list(range(len(ids)))
    source = resolve_source(str(wide_model))
    f32 = gguf_logits(exported_gguf(source, "gguf-f32"), ids, positions)
    q4 = exported_gguf(source, "gguf-q4_k_m")
    exact_cache = gguf_logits(q4, ids, positions)
    app_cache = gguf_logits(q4, ids, positions, **kv_cache_kwargs("gguf-q4_k_m", 64))
    cache_drift = (app_cache - exact_cache).abs().max().item()
    weight_drift = (exact_cache - f32).abs().max().item()
    print(f"max |dlogit|: f16 KV cache {cache_drift:.4f}, q4_k_m weights {weight_drift:.4f}")
    assert 0 < cache_drift < weight_drift / 4
