"""Loading: native directories (a tiny model built here), the shipped GGUF, and every bad path."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from llm_compare.chat_formats import RawFormat, TemplateFormat, choose_format, normalize_messages
from llm_compare.engine import stream_reply
from llm_compare.errors import UserError
from llm_compare.loading import embedded_path, load_model, resolve_source
from llm_compare.loading.gguf.cache import gguf_cache_dir
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

from conftest import build_tiny_chat_model

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]


def test_native_directory_loads_with_template_format(tiny_spec):
    loaded = load_model(tiny_spec)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.loader == "hf" and loaded.context_length == 256
    assert isinstance(loaded.chat_format, TemplateFormat)
    assert str(next(loaded.model.parameters()).dtype) == "torch.float32"
    ids = loaded.chat_format.encode(ASK)
    expected = loaded.tokenizer.apply_chat_template(ASK, add_generation_prompt=True, tokenize=False)
    assert loaded.tokenizer.decode(ids) == expected
    assert expected.endswith("<|im_start|>assistant\n")
    assert loaded.chat_format.stop_token_ids == (loaded.tokenizer.convert_tokens_to_ids("<|im_end|>"),)


def test_bfloat16_is_honoured(tiny_spec):
    loaded = load_model(tiny_spec.with_overrides(dtype="bfloat16"))
    assert str(next(loaded.model.parameters()).dtype) == "torch.bfloat16"


def test_raw_format_feeds_the_text_like_the_seed_scripts(tiny_spec):
    loaded = load_model(tiny_spec.with_overrides(chat_format="raw"))
    assert isinstance(loaded.chat_format, RawFormat)
    assert loaded.chat_format.encode(ASK) == loaded.tokenizer("Be brief.\nWhy is the sky blue?")["input_ids"]


def test_model_without_template_needs_raw(tmp_path):
    build_tiny_chat_model(tmp_path, with_template=False)
    with pytest.raises(UserError, match='chat_format = "raw"'):
        load_model(ModelSpec(name="nt", source=str(tmp_path), dtype="float32"))
    loaded = load_model(ModelSpec(name="nt", source=str(tmp_path), dtype="float32", chat_format="raw"))
    assert isinstance(loaded.chat_format, RawFormat)
    assert loaded.chat_format.encode(ASK) == loaded.tokenizer("Be brief.\nWhy is the sky blue?")["input_ids"]


def test_gradio_content_blocks_are_flattened():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]}]
    assert normalize_messages(msgs) == [{"role": "user", "content": "Hello world"}]


def test_legacy_format_names_need_legacy_models(tiny_model_dir):
    loaded = load_model(ModelSpec(name="t", source=str(tiny_model_dir), dtype="float32"))
    with pytest.raises(UserError, match="chatglm3"):
        choose_format("chatglm3", loaded.tokenizer)


def test_embedded_gguf_loads_through_the_conversion_cache(embedded_backend):
    path = embedded_path("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache = gguf_cache_dir(path)
    assert (cache / "complete").exists() and (cache / "model.safetensors").exists()
    assert embedded_backend.loaded.loader == "gguf"
    assert embedded_backend.context_length == 8192
    assert type(embedded_backend.model).__name__ == "LlamaForCausalLM"
    # a second load from the cache gives the same greedy reply
    again = load_model(ModelSpec(name="again", source="embedded:smollm2", dtype="float32"))
    params = GenerationParams(max_new_tokens=12, greedy=True)
    first = list(stream_reply(embedded_backend, ASK, params))[-1].text
    from llm_compare.backends.transformers import TransformersBackend

    second = list(stream_reply(TransformersBackend(embedded_backend.spec, again), ASK, params))[-1].text
    assert first == second and first


def _unsupported_gguf(path):
    import gguf

    w = gguf.GGUFWriter(str(path), "mamba9")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, "not a model directory"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not a .gguf"),
        (lambda d: (d / "config.json").write_text("{not json") and d, "cannot read"),
        (lambda d: (d / "config.json").write_text('{"model_type": "llama"}') and d, "no weight files"),
        (lambda d: _unsupported_gguf(d / "m.gguf"), "mamba9"),
    ],
    ids=["missing", "empty-dir", "not-gguf-file", "bad-config", "no-weights", "unsupported-gguf"],
)
def test_bad_sources_fail_with_one_line_messages(tmp_path, monkeypatch, make, message):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    target = make(tmp_path)
    with pytest.raises(UserError, match=message) as err:
        load_model(ModelSpec(name="bad", source=str(target)))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_path(tmp_path):
    shutil.copytree(tmp_path, tmp_path / "m", dirs_exist_ok=True)
    os.chmod(tmp_path / "m", 0)
    with pytest.raises(UserError, match="not readable"):
        resolve_source(str(tmp_path / "m"))


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="download it on a connected machine"):
        load_model(ModelSpec(name="hub", source="someorg/some-model"))
