"""`python -m llm_compare doctor`: reports problems with a fix line, never crashes on a bad path."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, LlamaConfig

from llm_compare.cli import main
from conftest import LEGACY_FIXTURES as LEGACY
from tests.test_memory import CHATGLM3_6B, QWEN_7B_CHAT


def doctor(capsys, *argv) -> tuple[int, str]:
    code = main(["doctor", *argv])
    return code, capsys.readouterr().out


@pytest.fixture
def seed_dirs(tmp_path):
    """Directories with the seed models' real configs (no weights: the doctor reads configs only)."""
    dirs = {}
    for name, config in (("chatglm3-6b", CHATGLM3_6B), ("Qwen-7B-Chat", QWEN_7B_CHAT)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
        dirs[name] = d
    return dirs


def test_reports_versions_cpu_and_ram(capsys):
    code, out = doctor(capsys, "embedded:smollm2")
    first = out.splitlines()[0]
    for part in ("python 3.", "torch ", "(CPU build)", "transformers ", "gradio "):
        assert part in first
    assert "cores" in out and "GiB total" in out and "GiB available" in out
    assert "loader: GGUF file" in out and "134.52M params" in out
    assert code == 0 and "all good" in out


def test_bad_paths_are_reported_and_checking_continues(capsys, tmp_path):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    code, out = doctor(capsys, "/no/such/model", str(not_a_model), str(empty_dir), "embedded:smollm2")
    assert code == 1
    assert "does not exist" in out and "not a .gguf model" in out and "no config.json" in out
    assert "  fix: check the path" in out  # every problem gets its own fix line
    assert out.count("  fix: ") == 3
    assert out.count("PROBLEM:") == 3 and "3 problem(s) found" in out
    assert "134.52M params" in out  # the good one after the bad ones was still checked


def test_native_directory_sizes_every_dtype(capsys, tmp_path):
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "tiny")
    n = sum(p.numel() for p in model.parameters())
    code, out = doctor(capsys, str(tmp_path / "tiny"))
    assert "loader: transformers model directory" in out
    for dtype in ("float32:", "bfloat16:", "float16:", "int8:"):
        assert f"  {dtype} {n / 1e3:.2f}K params" in out
    assert code == 0


def test_seed_models_on_a_24_gib_box(capsys, seed_dirs):
    _, out = doctor(capsys, "--available-gib", "23", *map(str, seed_dirs.values()))
    assert "6.24B params" in out and "7.72B params" in out
    assert "bfloat16: 6.24B params, ≈11.9 GiB resident → fits" in out
    assert "bfloat16: 7.72B params, ≈15.6 GiB resident → fits" in out
    assert "float32: 7.72B params, ≈31.0 GiB resident → DOES NOT FIT" in out
    _, out = doctor(capsys, "--available-gib", "4", str(seed_dirs["Qwen-7B-Chat"]))
    assert "PROBLEM: not enough free RAM to load it" in out


def _registry(tmp_path, seed_dirs, dtype_a, dtype_b):
    path = tmp_path / f"models-{dtype_a}-{dtype_b}.toml"
    path.write_text(
        f'default_pair = ["glm", "qwen"]\n'
        f'[models.glm]\nsource = "{seed_dirs["chatglm3-6b"]}"\ndtype = "{dtype_a}"\n'
        f'[models.qwen]\nsource = "{seed_dirs["Qwen-7B-Chat"]}"\ndtype = "{dtype_b}"\n'
    )
    return str(path)


def test_seed_pair_in_bf16_does_not_fit_24_gib_and_int8_does(capsys, tmp_path, seed_dirs):
    _, out = doctor(capsys, "--available-gib", "23.5", "--registry", _registry(tmp_path, seed_dirs, "bfloat16", "bfloat16"))
    assert "PROBLEM: the default pair does not fit in RAM together" in out
    assert "fix: use dtype int8 for one or both, or load one model at a time" in out
    _, out = doctor(capsys, "--available-gib", "23.5", "--registry", _registry(tmp_path, seed_dirs, "int8", "int8"))
    assert "default pair glm + qwen" in out and "does not fit in RAM together" not in out


def test_llamacpp_models_are_sized_by_their_file(capsys, tmp_path):
    from llm_compare.loading import embedded_path

    registry = tmp_path / "models.toml"
    registry.write_text('[models.smol-cpp]\nsource = "embedded:smollm2"\nbackend = "llamacpp"\n')
    code, out = doctor(capsys, "--registry", str(registry))
    size = embedded_path("smollm2").stat().st_size
    assert "smol-cpp  [llamacpp, auto]" in out and "  file: 134.52M params, ≈" in out
    assert size < 0.2 * 1024**3 and "resident → fits" in out


def test_odd_configs_are_problems_not_crashes(capsys, tmp_path):
    for name, config in (("strings", {"model_type": "llama", "hidden_size": "big"}),
                         ("unknown", {"model_type": "no-such-architecture"})):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
        (d / "model.safetensors").write_bytes(b"")
    code, out = doctor(capsys, str(tmp_path / "strings"), str(tmp_path / "unknown"))
    assert code == 1 and out.count("PROBLEM:") == 2
    assert "PROBLEM: invalid in " in out and "config.json: hidden_size = 'big'" in out
    assert "fix: the file is broken: download it again" in out
    assert "cannot size model type 'no-such-architecture'" in out


def test_loader_line_says_llama_cpp_and_its_context_for_gguf_paths(capsys, tmp_path):
    """A GGUF on the llamacpp backend is run as it is; a directory at a gguf-* dtype is exported;
    both name the context llama.cpp reserves at load (the registry's `context`, else the default)."""
    from llm_compare.specs import CONTEXT_TOKENS

    registry = tmp_path / "models.toml"
    registry.write_text(
        'default_pair = ["cpp", "glm"]\n'
        '[models.cpp]\nsource = "embedded:smollm2"\nbackend = "llamacpp"\n'
        '[models.glm]\nsource = "%s"\ndtype = "gguf-q8_0"\ncontext = 4096\n' % (LEGACY / "chatglm3-6b-tiny"))
    code, out = doctor(capsys, "--registry", str(registry))
    assert f"loader: GGUF file run by llama.cpp as it is ({CONTEXT_TOKENS}-token context)" in out
    assert "exported once to gguf-q8_0 and run by llama.cpp (4096-token context)" in out
    llamacpp_entry = out.split("cpp  [llamacpp")[1].split("glm  [")[0]
    assert "transformers unpacks" not in llamacpp_entry


def test_saved_conversation_budget_is_whole_contexts_capped_by_free_ram(capsys, seed_dirs):
    """Qwen-7B in bfloat16 caches 32 layers x 4096 K and V values of 2 bytes per token: 1 GiB for the
    2048 tokens of a context. With RAM to spare the budget is SAVED_CONTEXTS of those; with little
    left after loading, a quarter of what is left."""
    import re

    from llm_compare.loading.memory import SAVED_CONTEXTS

    qwen = str(seed_dirs["Qwen-7B-Chat"])
    _, out = doctor(capsys, "--available-gib", "200", qwen)
    assert f"saved conversation caches: up to {SAVED_CONTEXTS:.2f} GiB ({SAVED_CONTEXTS} contexts of 1.00 GiB KV cache" in out
    _, out = doctor(capsys, "--available-gib", "20", qwen)
    resident = float(re.search(r"bfloat16: 7.72B params, ≈([\d.]+) GiB resident", out).group(1))
    budget = float(re.search(r"saved conversation caches: up to ([\d.]+) GiB", out).group(1))
    assert budget == pytest.approx((20 - resident) / 4, abs=0.06)


def test_doctor_sizes_llama_cpp_at_the_models_context(capsys, seed_dirs, tmp_path):
    """A model's `context` is the KV cache llama.cpp reserves at load: every figure doctor gives for it
    moves with it (the model's line, its GGUF types, the default pair), by K and V of every layer and
    token in the export's cache type (f16 for the quantized exports: 2 bytes per value; f32: 4 bytes)."""
    import re

    from safetensors.torch import save_file

    qwen = seed_dirs["Qwen-7B-Chat"]
    save_file({}, str(qwen / "model.safetensors"))  # no weights: doctor reads the config and shard headers
    figures = {}
    for context in (2048, 8192):
        registry = tmp_path / f"models-{context}.toml"
        registry.write_text(f'default_pair = ["q4", "bf16"]\n[models.q4]\nsource = "{qwen}"\ndtype = "gguf-q4_k_m"\n'
                            f'context = {context}\n[models.bf16]\nsource = "{qwen}"\ndtype = "bfloat16"\n'
                            f'context = {context}\n')
        out = doctor(capsys, "--registry", str(registry), "--available-gib", "64")[1]
        types = out.split("bf16  [transformers")[1]
        figures[context] = [float(re.search(pattern, text).group(1)) for pattern, text in (
            (r"gguf-q4_k_m: [\d.]+B params, ≈([\d.]+) GiB resident", out),
            (r"gguf-q4_k_m ≈([\d.]+) GiB RAM", types),
            (r"gguf-f32 ≈([\d.]+) GiB RAM", types),
            (r"default pair q4 \+ bf16: ≈([\d.]+) GiB together", out))]
    values = 2 * QWEN_7B_CHAT["num_hidden_layers"] * QWEN_7B_CHAT["num_attention_heads"] * QWEN_7B_CHAT["kv_channels"]
    f16, f32 = (values * (8192 - 2048) * per_value / 2**30 for per_value in (2, 4))
    grown = [after - before for before, after in zip(figures[2048], figures[8192])]
    for got, expected in zip(grown, (f16, f16, f32, f16)):
        assert abs(got - expected) <= 0.11  # two figures rounded to 0.1 GiB
