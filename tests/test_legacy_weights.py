"""ChatGLM3 and Qwen-1 checkpoints loaded natively, checked against the original implementations'
reference values (shared/fixtures/legacy beside the repo), and every kind of broken checkpoint refused."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llm_compare.backends.transformers import TransformersBackend
from llm_compare.engine import stream_reply
from llm_compare.errors import UserError
from llm_compare.loading import load_model
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

from conftest import LEGACY_FIXTURES as FIXTURES  # noqa: E402
GLM, QWEN = FIXTURES / "chatglm3-6b-tiny", FIXTURES / "qwen-7b-chat-tiny"
# what a real checkpoint directory holds (the reference files are test data, not part of it)
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.model", "qwen.tiktoken")

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not present")


def reference(directory: Path) -> dict:
    return json.loads((directory / "reference.json").read_text(encoding="utf-8"))


def config_of(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def shard_names(directory: Path) -> list[str]:
    """The checkpoint's weight files in reading order, from its index (not from this fixture set's names)."""
    index = next(directory.glob("*.index.json"))
    return sorted(set(json.loads(index.read_text())["weight_map"].values()))


def shard_holding(directory: Path, tensor: str) -> str:
    index = next(directory.glob("*.index.json"))
    return json.loads(index.read_text())["weight_map"][tensor]


def spec_for(directory: Path, **kw) -> ModelSpec:
    return ModelSpec(name=directory.name, source=str(directory), dtype=kw.pop("dtype", "float32"), **kw)


@pytest.fixture(scope="module")
def glm():
    return load_model(spec_for(GLM))


@pytest.fixture(scope="module")
def qwen():
    return load_model(spec_for(QWEN))


def forward_cases(directory: Path):
    ref = reference(directory)
    chats = {c["name"]: c for c in ref["chat"]}
    for entry in ref["forward"]:
        ids = entry.get("input_ids") or chats[entry["input_ids_from"].split("[")[1].split("]")[0]]["input_ids"]
        yield pytest.param(directory, entry, ids, id=f"{directory.name}-{entry['name']}")


def loaded_for(directory, glm, qwen):
    return glm if directory == GLM else qwen


@pytest.mark.parametrize("directory,entry,ids", [*forward_cases(GLM), *forward_cases(QWEN)])
def test_logits_match_original(directory, entry, ids, glm, qwen):
    loaded = loaded_for(directory, glm, qwen)
    expected = load_file(directory / "reference.safetensors")[entry["logits_key"]]
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([ids])).logits[0, entry["positions"]]
    assert logits.dtype == torch.float32
    assert (logits - expected).abs().max().item() <= 1e-4
    assert logits.argmax(-1).tolist() == entry["argmax_at_positions"]


@pytest.mark.parametrize("directory,entry,ids", [*forward_cases(GLM), *forward_cases(QWEN)])
def test_greedy_generate_matches_original(directory, entry, ids, glm, qwen):
    model = loaded_for(directory, glm, qwen).model
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **entry["greedy_generate_kwargs"])
    assert out[0, len(ids) :].tolist() == entry["greedy_ids"]
    if "greedy_ids_generation_config_defaults" in entry:  # Qwen: generation_config.json's penalty 1.1 applies
        kwargs = entry["greedy_ids_generation_config_defaults_generate_kwargs"]
        with torch.inference_mode():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        assert out[0, len(ids) :].tolist() == entry["greedy_ids_generation_config_defaults"]


def chat_messages(directory: Path, conv: dict) -> list[dict]:
    if directory == GLM:
        return [*conv["history"], {"role": conv["role"], "content": conv["query"]}]
    messages = [{"role": "system", "content": conv["system"]}]
    for question, answer in conv["history"]:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": conv["query"]}]


def chat_cases():
    for directory in (GLM, QWEN):
        for conv in reference(directory)["chat"]:
            yield pytest.param(directory, conv, id=f"{directory.name}-{conv['name']}")


@pytest.mark.parametrize("directory,conv", list(chat_cases()))
def test_chat_reply_through_engine_matches_original(directory, conv, glm, qwen):
    loaded = loaded_for(directory, glm, qwen)
    messages = chat_messages(directory, conv)
    assert loaded.chat_format.encode(messages) == conv["input_ids"]
    backend = TransformersBackend(spec_for(directory), loaded)
    # chat(max_new_tokens=16) drops its last generated token even when it is not a stop token;
    # the engine asks the model for 15 and so returns the identical reply
    stopped = conv["generated_ids"][-1] in loaded.chat_format.stop_token_ids
    max_new = conv["effective_generation"].get("max_new_tokens", 16)
    params = GenerationParams(
        max_new_tokens=max_new, greedy=True, repetition_penalty=conv["effective_generation"]["repetition_penalty"]
    )
    updates = list(stream_reply(backend, messages, params))
    assert updates[-1].done and updates[-1].finish_reason == ("stop" if stopped and len(conv["generated_ids"]) < max_new else "length")
    assert updates[-1].metrics.new_tokens == len(conv["generated_ids"]) - (0 if stopped and len(conv["generated_ids"]) < max_new else 1)
    assert updates[-1].text == conv["reply"]


@pytest.mark.parametrize("directory", [GLM, QWEN], ids=["chatglm3", "qwen"])
def test_raw_format_is_the_seeds_tokenizer_path(directory):
    """chat_format "raw": tokenizer(prompt) as the seed scripts did, then plain generate()."""
    naive = reference(directory)["naive"]
    loaded = load_model(spec_for(directory, chat_format="raw"))
    assert loaded.chat_format.name == "raw"
    ids = loaded.chat_format.encode([{"role": "user", "content": naive["prompt"]}])
    assert ids == naive["input_ids"]
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = loaded.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **naive["generate_kwargs"])
    assert out[0, len(ids) :].tolist() == naive["generated_ids"]


def test_loaded_model_describes_itself(glm, qwen):
    assert (glm.loader, qwen.loader) == ("chatglm3", "qwen")
    assert (glm.context_length, qwen.context_length) == (config_of(GLM)["seq_length"], config_of(QWEN)["seq_length"])
    assert (glm.chat_format.name, qwen.chat_format.name) == ("chatglm3", "qwen")
    assert not any(p.is_meta for p in glm.model.parameters()) and not any(b.is_meta for b in qwen.model.buffers())
    # Qwen-1's intermediate_size counts both MLP halves; GLM's key/value groups become KV heads
    assert qwen.model.config.intermediate_size == config_of(QWEN)["intermediate_size"] // 2
    assert glm.model.config.num_key_value_heads == config_of(GLM)["multi_query_group_num"]


def test_bfloat16_load_stays_close():
    """A bf16 load (the default dtype) converts every weight and stays near the float32 original."""
    loaded = load_model(spec_for(QWEN, dtype="bfloat16"))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    entry = reference(QWEN)["forward"][0]
    conv = reference(QWEN)["chat"][0]
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([conv["input_ids"]])).logits[0, -1].float()
    expected = load_file(QWEN / "reference.safetensors")[entry["logits_key"]][-1]
    assert (logits - expected).abs().max().item() < 0.1


@pytest.mark.parametrize("directory", [GLM, QWEN], ids=["chatglm3", "qwen"])
def test_int8_quantizes_the_linear_layers(directory):
    """dtype int8: bf16 weights, then llm_compare.loading.quantize.quantize_int8."""
    loaded = load_model(spec_for(directory, dtype="int8"))
    linears = [n for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears == ["lm_head"]  # every projection was replaced; the output layer stays bf16
    entry, conv = reference(directory)["forward"][0], reference(directory)["chat"][0]
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([conv["input_ids"]])).logits[0, entry["positions"]].float()
    expected = load_file(directory / "reference.safetensors")[entry["logits_key"]]
    assert (logits - expected).abs().max().item() < 0.5  # logits are about 4-5 in magnitude


# ---- broken checkpoints -------------------------------------------------------------------------


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for f in source.iterdir():
        weights = f.suffix in (".bin", ".safetensors") or f.name.endswith(".index.json")
        if f.name in MODEL_FILES or weights and not f.name.startswith("reference"):
            shutil.copyfile(f, target / f.name)
    return target


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def load_error(directory: Path) -> str:
    with pytest.raises(UserError) as err:
        load_model(spec_for(directory))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_copied_checkpoint_loads(tmp_path):
    """The copies below are loadable until broken (so the errors come from the breakage)."""
    loaded = load_model(spec_for(copy_checkpoint(GLM, tmp_path / "glm")))
    assert loaded.loader == "chatglm3"


@pytest.mark.parametrize("source,which", [(GLM, 1), (QWEN, -1)])
def test_missing_shard_is_named(tmp_path, source, which):
    d = copy_checkpoint(source, tmp_path / "m")
    shard = shard_names(d)[which]
    (d / shard).unlink()
    message = load_error(d)
    assert shard in message and "missing" in message


@pytest.mark.parametrize("source,which", [(GLM, 0), (QWEN, 1)])
def test_truncated_shard_is_named(tmp_path, source, which):
    d = copy_checkpoint(source, tmp_path / "m")
    shard = shard_names(d)[which]
    data = (d / shard).read_bytes()
    (d / shard).write_bytes(data[: len(data) * 2 // 3])
    message = load_error(d)
    assert shard in message and "truncated" in message


def test_corrupt_safetensors_header_is_named(tmp_path):
    d = copy_checkpoint(QWEN, tmp_path / "m")
    shard = d / shard_names(d)[-1]
    data = bytearray(shard.read_bytes())
    data[8:40] = b"#" * 32
    shard.write_bytes(bytes(data))
    message = load_error(d)
    assert shard.name in message and "corrupt" in message


@pytest.mark.parametrize(
    "source,index", [(GLM, "pytorch_model.bin.index.json"), (QWEN, "model.safetensors.index.json")]
)
def test_unreadable_index_is_named(tmp_path, source, index):
    d = copy_checkpoint(source, tmp_path / "m")
    (d / index).write_text('{"weight_map": {')
    message = load_error(d)
    assert index in message and "JSON" in message


def test_index_naming_an_absent_shard(tmp_path):
    d = copy_checkpoint(QWEN, tmp_path / "m")
    index = d / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["transformer.ln_f.weight"] = "model-00009-of-00009.safetensors"
    index.write_text(json.dumps(data))
    message = load_error(d)
    assert "model-00009-of-00009.safetensors" in message and "missing" in message


def test_shard_lacking_a_tensor_its_index_lists(tmp_path):
    d = copy_checkpoint(GLM, tmp_path / "m")
    shard = d / shard_holding(d, "transformer.encoder.final_layernorm.weight")
    state = torch.load(shard, weights_only=True)
    del state["transformer.encoder.final_layernorm.weight"]
    torch.save(state, shard)
    message = load_error(d)
    assert shard.name in message and "transformer.encoder.final_layernorm.weight" in message


@pytest.mark.parametrize(
    "source,changes,word",
    [
        (GLM, {"pre_seq_len": 128}, "pre_seq_len"),
        (GLM, {"rmsnorm": False}, "rmsnorm"),
        (GLM, {"add_bias_linear": True}, "add_bias_linear"),
        (GLM, {"quantization_bit": 4}, "quantization_bit"),
        (QWEN, {"rotary_pct": 0.5}, "rotary_pct"),
        (QWEN, {"no_bias": False}, "no_bias"),
    ],
)
def test_unsupported_variant_is_refused(tmp_path, source, changes, word):
    d = copy_checkpoint(source, tmp_path / "m")
    edit_json(d / "config.json", **changes)
    message = load_error(d)
    assert "config.json" in message and word in message


def test_shape_mismatch_names_config(tmp_path):
    d = copy_checkpoint(QWEN, tmp_path / "m")
    config = config_of(d)
    edit_json(d / "config.json", hidden_size=2 * config["hidden_size"], kv_channels=2 * config["kv_channels"])
    message = load_error(d)
    assert "config.json" in message and "shape" in message


def test_safetensors_win_and_bin_is_never_read(tmp_path):
    """With both formats present only safetensors are read: a broken .bin beside them is ignored."""
    d = copy_checkpoint(QWEN, tmp_path / "m")
    (d / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    assert load_model(spec_for(d)).loader == "qwen"


def test_pickled_code_in_a_bin_shard_is_refused_not_run(tmp_path):
    d = copy_checkpoint(GLM, tmp_path / "m")
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    shard = d / shard_names(d)[0]
    state = torch.load(shard, weights_only=True)
    state["extra"] = Payload()
    torch.save(state, shard)
    message = load_error(d)
    assert shard.name in message and "refused" in message
    assert not marker.exists()


def test_python_files_in_the_directory_are_never_run(tmp_path):
    d = copy_checkpoint(GLM, tmp_path / "m")
    marker = tmp_path / "code-ran"
    trap = f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit('model code executed')\n"
    for name in ("configuration_chatglm.py", "modeling_chatglm.py", "tokenization_chatglm.py", "__init__.py"):
        (d / name).write_text(trap)
    loaded = load_model(spec_for(d))
    assert loaded.loader == "chatglm3"
    assert not marker.exists()
    assert not any("chatglm" in name for name in sys.modules if not name.startswith("llm_compare"))
    # the trap is live: running one of the files (in a child process) does leave the marker
    subprocess.run([sys.executable, str(d / "modeling_chatglm.py")], capture_output=True)
    assert marker.exists()


def test_failed_load_leaves_no_model_alive(tmp_path):
    """A shard failing late (after others were assigned) must not pin the half-loaded model, even
    while the error (and its traceback) is still referenced."""
    from transformers import GlmForCausalLM

    d = copy_checkpoint(GLM, tmp_path / "m")
    shard = d / shard_names(d)[-1]  # read last: the other shards are already assigned
    state = torch.load(shard, weights_only=True)
    tensor = next(name for name, t in state.items() if t.dim() == 2)
    state[tensor] = state[tensor][:1]
    torch.save(state, shard)
    gc.collect()
    before = sum(isinstance(o, GlmForCausalLM) for o in gc.get_objects())
    with pytest.raises(UserError) as err:
        load_model(spec_for(d))
    assert tensor in str(err.value) and shard.name in str(err.value)
    gc.collect()
    assert sum(isinstance(o, GlmForCausalLM) for o in gc.get_objects()) == before


# ---- memory -------------------------------------------------------------------------------------


def write_random_qwen(directory: Path, hidden=512, layers=24, vocab=151936, shard_bytes=100 << 20) -> int:
    """A Qwen-1-format checkpoint with random bf16 weights in several safetensors shards; returns its bytes."""
    directory.mkdir()
    config = json.loads((QWEN / "config.json").read_text())
    heads = hidden // 128
    config.update(hidden_size=hidden, num_attention_heads=heads, kv_channels=128, num_hidden_layers=layers,
                  intermediate_size=2 * 2816, vocab_size=vocab)  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    shutil.copyfile(QWEN / "qwen.tiktoken", directory / "qwen.tiktoken")
    shapes = {"transformer.wte.weight": (vocab, hidden), "transformer.ln_f.weight": (hidden,)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes |= {p + "ln_1.weight": (hidden,), p + "ln_2.weight": (hidden,),
                   p + "attn.c_attn.weight": (3 * hidden, hidden), p + "attn.c_attn.bias": (3 * hidden,),
                   p + "attn.c_proj.weight": (hidden, hidden), p + "mlp.w1.weight": (2816, hidden),
                   p + "mlp.w2.weight": (2816, hidden), p + "mlp.c_proj.weight": (hidden, 2816)}  # fmt: skip
    shapes["lm_head.weight"] = (vocab, hidden)
    return write_shards(directory, shapes, shard_bytes)


def write_random_glm(directory: Path, hidden=512, layers=32, ffn=1376, shard_bytes=16 << 20) -> int:
    """A ChatGLM3-format checkpoint with random bf16 weights in safetensors shards and the fixture's small
    vocabulary, so no single tensor is large; returns its bytes."""
    directory.mkdir()
    config = config_of(GLM)
    heads, groups, kv = hidden // 128, config["multi_query_group_num"], 128
    config.update(hidden_size=hidden, num_attention_heads=heads, kv_channels=kv, num_layers=layers, ffn_hidden_size=ffn)
    (directory / "config.json").write_text(json.dumps(config))
    shutil.copyfile(GLM / "tokenizer.model", directory / "tokenizer.model")
    vocab, qkv = config["padded_vocab_size"], heads * kv + 2 * groups * kv
    shapes = {"transformer.embedding.word_embeddings.weight": (vocab, hidden),
              "transformer.encoder.final_layernorm.weight": (hidden,), "transformer.output_layer.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"transformer.encoder.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                   p + "self_attention.query_key_value.weight": (qkv, hidden),
                   p + "self_attention.query_key_value.bias": (qkv,), p + "self_attention.dense.weight": (hidden, hidden),
                   p + "mlp.dense_h_to_4h.weight": (2 * ffn, hidden), p + "mlp.dense_4h_to_h.weight": (hidden, ffn)}
    return write_shards(directory, shapes, shard_bytes)


def write_shards(directory: Path, shapes: dict, shard_bytes: int) -> int:
    """Random bf16 tensors of `shapes` in safetensors shards of about `shard_bytes`, with their index."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    groups, current, size, total = [], {}, 0, 0
    for name, shape in shapes.items():
        current[name] = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        size += current[name].numel() * 2
        if size >= shard_bytes:
            groups.append(current)
            total, current, size = total + size, {}, 0
    groups.append(current)
    total += size
    weight_map = {}
    for n, group in enumerate(groups, 1):
        file = f"model-{n:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(directory / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, file)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


MEASURE = """
import gc, json, sys
import psutil
import torch
from llm_compare.loading import load_model
from llm_compare.specs import ModelSpec


def own_peak() -> int:
    # VmHWM: this process's own peak RSS. ru_maxrss would not do: after fork/exec it starts at the
    # parent's RSS (a pytest process holding models), which made the peak look like a second copy.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024


directory, warm_up, dtype = sys.argv[1:4]
load_model(ModelSpec(name="warm-up", source=warm_up, dtype=dtype))  # imports, lazy init
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak to the RSS now (Linux >= 4.0)
before = psutil.Process().memory_info().rss
model = load_model(ModelSpec(name="big", source=directory, dtype=dtype)).model
peak = own_peak()
gc.collect()
after = psutil.Process().memory_info().rss
model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if t.dtype != torch.float32)
print(json.dumps({"before": before, "peak": peak, "after": after, "model_bytes": model_bytes}))
"""
LOAD_SLACK = 64 << 20  # allocator arenas and page-cache noise in RSS figures (11-61 MiB seen)


def measure_load(directory: Path, warm_up: Path, dtype: str = "bfloat16") -> dict:
    """Load in a fresh process (after a load of `warm_up`, a fixture of the same format); RSS before,
    peak while loading and after, and the model's tensor bytes."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(directory), str(warm_up), dtype],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def allowed_load_peak(directory: Path) -> int:
    """What loading may add above the model itself: one converted tensor plus the mapped shard it is
    read from. Reading the state dict first and then building the model would add the whole model."""
    from safetensors import safe_open

    largest_tensor = 0
    for shard in shard_names(directory):
        with safe_open(directory / shard, "pt") as st:
            for key in st.keys():
                largest_tensor = max(largest_tensor, 2 * _numel(st.get_slice(key).get_shape()))  # bf16
    largest_shard = max((directory / shard).stat().st_size for shard in shard_names(directory))
    return largest_tensor + largest_shard + LOAD_SLACK


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def check_load_memory(directory: Path, warm_up: Path, total: int) -> dict:
    """Peak and resident growth of a bf16 load, measured, against the model's bytes and the estimate."""
    from llm_compare.loading.memory import estimate

    m = measure_load(directory, warm_up)
    assert m["model_bytes"] == total
    extra, allowed = m["peak"] - m["before"] - total, allowed_load_peak(directory)
    print(f"load peak: model + {extra >> 20} MiB (allowed {allowed >> 20}, a second copy: {total >> 20})")
    assert allowed < total  # so a second copy of the weights could not pass
    assert extra <= allowed
    # what the doctor and the RAM check count is what the process really holds: the estimated weights
    # (and no more than allocator noise besides), within the resident figure the RAM check compares
    est, grown = estimate(str(directory), "bfloat16"), m["after"] - m["before"]
    assert 0.95 * est.weights_bytes <= grown <= min(est.weights_bytes + LOAD_SLACK, est.resident_bytes)
    return m


def test_loading_holds_no_second_copy_and_the_estimate_matches_the_measured_memory(tmp_path):
    """A random ChatGLM3 checkpoint of ≈ 185 MiB in 16 MiB shards, loaded in a fresh process."""
    check_load_memory(tmp_path / "m", GLM, write_random_glm(tmp_path / "m"))


@pytest.mark.slow
def test_loading_a_larger_checkpoint_holds_no_second_copy_and_int8_holds_less(tmp_path):
    """The same at 570 MiB (hidden 512, 24 layers); int8 ends between its weight estimate and bf16's."""
    from llm_compare.loading.memory import estimate

    directory = tmp_path / "big"
    check_load_memory(directory, QWEN, write_random_qwen(directory))
    m = measure_load(directory, QWEN, "int8")
    grown = m["after"] - m["before"]
    print(f"int8 resident growth: {grown >> 20} MiB, int8 weights {m['model_bytes'] >> 20} MiB")
    assert m["model_bytes"] == estimate(str(directory), "int8").weights_bytes
    assert m["model_bytes"] - LOAD_SLACK <= grown < estimate(str(directory), "bfloat16").weights_bytes
