"""The native GGUF conversion (loading/gguf/unpack.py) against transformers' own, in the same run.

transformers' GGUF loading (`gguf/cache.convert_with_transformers`) is the independent reference: the same
file goes through both, and the two folders must hold bitwise-identical float32 tensors, the same
config, a tokenizer giving the same ids and chat prompts, and models giving the same greedy ids.
Files: the embedded SmolLM2 (Q4_1 + Q8_0 + F32, tied embeddings, 9 heads / 3 kv heads) and a tiny
llama exported here at Q8_0 (untied output, its own vocabulary and template). The embedded reference
takes ≈25 s on 2 cores; it stays in the default run because it is the proof the fast path is right.
"""

from __future__ import annotations

import json
import threading

import pytest
import torch

from llm_compare.errors import UserError
from llm_compare.loading import embedded_path, resolve_source
from llm_compare.loading.gguf import cache
from llm_compare.loading.gguf.header import GgufHeader, GgufTensor, check_gguf
from llm_compare.loading.gguf.plan import llama_rope_order
from llm_compare.loading.gguf.unpack import VOCAB_KEYS, not_covered, unrope, write_model_directory
from llm_compare.progress import reporting
from llm_compare.specs import ModelSpec

TEXTS = [
    "Hello world! How are you today?",
    "  leading spaces,\ttabs\tand    runs of     spaces\n\n\nand newlines  ",
    "请说出以下两句话区别在哪里？ 冬天：能穿多少穿多少",
    "emoji 🙂👍🏽 and 🇫🇷 flags, é ü ß",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|> specials inline",
    "def add(a, b):\n    return a + b  # 1234567 3.14159",
    "",
]
CHATS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
]
CONFIG_FIELDS = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                 "rope_parameters", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
                 "hidden_act", "attention_bias", "mlp_bias", "architectures"]


def both_ways(path, work):
    """(native folder, reference folder) for one GGUF; the native one through convert_gguf itself,
    with transformers' conversion made to fail there, so the fast path is the one that ran."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(work / "cache"))
        mp.setattr(cache, "convert_with_transformers", lambda *a: pytest.fail("fell back to transformers"))
        native = cache.convert_gguf(path)
    reference = work / "reference"
    cache.convert_with_transformers(path, reference, "the reference")
    return native, reference


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    return both_ways(embedded_path("smollm2"), tmp_path_factory.mktemp("embedded"))


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    from llm_compare.loading.gguf.export import exported_gguf

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("export-cache")))
        return exported_gguf(resolve_source(str(tiny_model_dir)), "gguf-q8_0")


@pytest.fixture(scope="module")
def tiny(tiny_gguf, tmp_path_factory):
    return both_ways(tiny_gguf, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(params=["embedded", "tiny"])
def pair(request):
    return request.getfixturevalue(request.param)


def test_unrope_undoes_the_export_permutation():
    rows = torch.randn(4 * 16, 24)  # 4 heads of 16 rows: llama.cpp's pair order, then back
    for heads in (4, 2, 1):
        assert torch.equal(torch.from_numpy(unrope(llama_rope_order(rows, heads).numpy(), heads)), rows)


def test_same_float32_tensors_bit_for_bit(pair):
    from safetensors.torch import load_file

    native, reference = (load_file(p / "model.safetensors") for p in pair)
    assert sorted(native) == sorted(reference)
    for name, tensor in native.items():
        assert tensor.dtype == reference[name].dtype == torch.float32, name
        assert torch.equal(tensor.view(torch.int32), reference[name].view(torch.int32)), name


def test_same_config_and_generation_config(pair):
    from transformers import AutoConfig, GenerationConfig

    native, reference = (AutoConfig.from_pretrained(p) for p in pair)
    for name in CONFIG_FIELDS:
        assert getattr(native, name, None) == getattr(reference, name, None), name
    gen = [GenerationConfig.from_pretrained(p).to_dict() for p in pair]
    assert {k: v for k, v in gen[0].items() if k != "transformers_version"} == \
        {k: v for k, v in gen[1].items() if k != "transformers_version"}


def test_same_token_ids_specials_and_chat_prompts(pair):
    from transformers import AutoTokenizer

    native, reference = (AutoTokenizer.from_pretrained(p) for p in pair)
    assert len(native) == len(reference) and native.get_vocab() == reference.get_vocab()
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(native, attr) == getattr(reference, attr), attr
    assert native.all_special_tokens and sorted(native.all_special_tokens) == sorted(reference.all_special_tokens)
    for text in TEXTS:
        ids = native(text)["input_ids"]
        assert ids == reference(text)["input_ids"], text
        assert native.decode(ids) == reference.decode(ids)
        assert native.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)
    assert native.chat_template == reference.chat_template
    for chat in CHATS if reference.chat_template else ():  # the tiny export carries no template
        for gen in (True, False):
            mine = native.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert mine == reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)


def test_same_greedy_output_ids(pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pair[1])
    prompt = tokenizer("<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
                       return_tensors="pt")
    outputs = []
    for folder in pair:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.inference_mode():
            outputs.append(model.generate(**prompt, max_new_tokens=12, do_sample=False).tolist())
    assert outputs[0] == outputs[1] and len(outputs[0][0]) > prompt["input_ids"].shape[1]


def test_cache_folder_layout(embedded):
    native = embedded[0]
    names = {p.name for p in native.iterdir()}
    assert {"complete", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not list(native.parent.glob("*.tmp*"))
    assert json.loads((native / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def _header(arch="llama", **meta) -> GgufHeader:
    base = {"general.architecture": arch, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
            "tokenizer.ggml.tokens": ["a", "b", "ab"], "tokenizer.ggml.merges": ["a b"]}
    tensors = (GgufTensor("token_embd.weight", (4, 3), 0, 0), GgufTensor("blk.0.attn_q.weight", (4, 4), 8, 64))
    return GgufHeader(3, tensors, 0, {**base, **meta})


@pytest.mark.parametrize("header, reason", [
    (_header(), None),
    (_header("qwen2"), "architecture 'qwen2'"),
    (_header(**{"tokenizer.ggml.model": "llama"}), "tokenizer 'llama'"),
    (_header(**{"tokenizer.ggml.pre": "llama-bpe"}), "pre-tokenizer 'llama-bpe'"),
    (_header(**{"llama.rope.scaling.type": "linear"}), "rope scaling"),
    (_header(**{"general.name": "Mistral 7B"}), "Mistral"),
    (GgufHeader(3, (GgufTensor("rope_freqs.weight", (32,), 0, 0),), 0, _header().metadata), "rope_freqs"),
    (GgufHeader(3, (GgufTensor("output.weight", (32, 4), 16, 0),), 0, _header().metadata), "tensor type 16"),
], ids=["covered", "arch", "sentencepiece", "pre", "rope-scaling", "mistral", "tensor", "iq-type"])
def test_what_the_fast_conversion_covers(header, reason):
    found = not_covered(header)
    assert found == reason if reason is None else reason in found


def test_uncovered_file_falls_back_to_transformers_and_says_why(tiny_gguf, tmp_path, monkeypatch):
    """The fallback itself runs for real (transformers' conversion of the tiny file); what makes a file
    uncovered is test_what_the_fast_conversion_covers' job."""
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "not_covered", lambda header: "tensor rope_freqs.weight")
    monkeypatch.setattr(cache, "write_model_directory", lambda *a, **k: pytest.fail("native path on an uncovered file"))
    lines = []
    with reporting(lines.append):
        folder = cache.convert_gguf(tiny_gguf)
    assert (folder / "complete").exists() and (folder / "model.safetensors").exists()
    assert any("rope_freqs" in line and "transformers' own GGUF conversion" in line for line in lines)


def test_two_callers_convert_once_and_background_start(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    calls, entered = [], threading.Event()

    def slow_write(*args, **kwargs):
        calls.append(args[0])
        entered.set()
        threading.Event().wait(0.5)  # the second caller arrives while this one works
        return write_model_directory(*args, **kwargs)

    monkeypatch.setattr(cache, "write_model_directory", slow_write)
    spec = ModelSpec(name="t", source=str(tiny_gguf), dtype="float32")
    started = cache.convert_in_background([spec, spec.with_overrides(dtype="bfloat16")])
    assert len(started) == 1  # one file, one conversion
    assert entered.wait(60)
    lines = []
    with reporting(lines.append):
        folder = cache.convert_gguf(tiny_gguf)  # a Send while the launch-time conversion runs: it waits
    started[0].join(60)
    assert calls == [tiny_gguf] and (folder / "complete").exists()
    assert any("already running" in line for line in lines)
    assert cache.convert_in_background([spec]) == []  # cached: nothing to start


def test_vocabulary_is_read_only_when_asked(tiny_gguf):
    assert "tokenizer.ggml.tokens" not in check_gguf(tiny_gguf).metadata
    full = check_gguf(tiny_gguf, VOCAB_KEYS).metadata
    assert len(full["tokenizer.ggml.tokens"]) == len(full["tokenizer.ggml.token_type"]) > 0


def test_cut_file_is_refused_before_converting(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(UserError, match="cut short"):
        cache.convert_gguf(cut)
