"""dtype "auto": the measured fastest path that fits, a quantized GGUF export only where it matters.

The probes' figures are injected (per parameter, the same rates for every model size), never
measured here; the model directories are a config.json and a one-tensor stub shard (no weights
are read to decide)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from llm_compare import cpu_probe, dtype_choice, gguf_probe
from llm_compare.errors import UserError
from llm_compare.loading.memory import estimate
from llm_compare.specs import ModelSpec, load_registry

from conftest import LEGACY_FIXTURES

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
PHI3_MINI = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064}
# seconds of one representative turn per parameter: bf16 and fp32 on transformers, the GGUF types
# on llama.cpp, and their export; the choice must follow whatever these say
RATES = {"bfloat16": 2e-8, "float32": 3e-8, "gguf-q4_k_m": 4e-9, "gguf-q8_0": 6e-9}
EXPORT_RATE = {"gguf-q4_k_m": 4e-8, "gguf-q8_0": 3e-8}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_probe.DTYPE_ENV, raising=False)
    return tmp_path / "cache"


def model_dir(tmp_path, name: str, config: dict):
    """A model directory as resolve_source and the exporter's plan see it, without its weights."""
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    save_file({"stub": torch.zeros(2)}, str(d / "model.safetensors"))
    return str(d)


def inject(monkeypatch, rates=RATES, export_rate=EXPORT_RATE):
    """Probe figures as the probes report them: per weight at a width (transformers), per parameter (GGUF)."""
    def turn(seconds):
        return {"turn_s": seconds, "prefill_s": seconds / 2, "decode_s": seconds / 2 / cpu_probe.TURN_NEW}

    monkeypatch.setattr(cpu_probe, "dtype_costs", lambda hidden, mlp: {
        d: turn(rates[d] * hidden * mlp) for d in cpu_probe.CANDIDATES})
    monkeypatch.setattr(gguf_probe, "gguf_costs", lambda hidden, mlp: {
        d: {"turn_s_per_param": rates[d], "export_s_per_param": export_rate[d]} for d in gguf_probe.PROBE_TYPES})


def no_gguf_probe(monkeypatch):
    monkeypatch.setattr(gguf_probe, "gguf_costs", lambda *a: pytest.fail("the GGUF probe ran"))


def expected_speedup(dtype: str, over: str) -> float:
    return RATES[over] / (RATES[dtype] + EXPORT_RATE[dtype] / dtype_choice.EXPORT_TURNS)


def test_a_7b_directory_with_no_dtype_gets_the_fastest_export_and_says_why(cache, tmp_path, monkeypatch):
    inject(monkeypatch)
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    spec, choice = dtype_choice.resolve(ModelSpec(name="m", source=source), available=10**12)
    assert spec.dtype == choice.dtype == "gguf-q4_k_m"
    speedup = expected_speedup("gguf-q4_k_m", "bfloat16")
    assert choice.line.startswith("auto: gguf-q4_k_m, 4-bit quantized weights run by llama.cpp, "
                                  f"{speedup:.1f}× faster than bfloat16 here")
    assert "one-time export ≈" in choice.line and choice.line.endswith("choose dtype bfloat16 for the unquantized weights")
    params = estimate(source, "bfloat16").params
    assert choice.turn_s["bfloat16"] == pytest.approx(RATES["bfloat16"] * params)
    assert choice.export_s["gguf-q4_k_m"] == pytest.approx(EXPORT_RATE["gguf-q4_k_m"] * params)


def test_the_export_counts_against_the_quantized_type(cache, tmp_path, monkeypatch):
    """q8_0 runs faster per turn here but costs so much to export that q4_k_m wins, export included."""
    inject(monkeypatch, RATES | {"gguf-q8_0": 3.9e-9}, EXPORT_RATE | {"gguf-q8_0": 1e-6})
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "llama-7b", LLAMA_7B)))
    assert choice.dtype == "gguf-q4_k_m"
    inject(monkeypatch, RATES | {"gguf-q8_0": 3.9e-9})
    assert dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "again", LLAMA_7B))).dtype == "gguf-q8_0"


def test_ram_too_small_for_an_export_type_skips_it(cache, tmp_path, monkeypatch):
    inject(monkeypatch, RATES | {"gguf-q8_0": 3e-9})  # q8_0 the fastest here, but it needs more RAM than q4_k_m
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    q4, q8 = (estimate(source, d).peak_bytes for d in ("gguf-q4_k_m", "gguf-q8_0"))
    assert dtype_choice.resolve(ModelSpec(name="m", source=source), available=q8)[0].dtype == "gguf-q8_0"
    assert dtype_choice.resolve(ModelSpec(name="m", source=source), available=q8 - 1)[0].dtype == "gguf-q4_k_m"
    spec, choice = dtype_choice.resolve(ModelSpec(name="m", source=source), available=q4 - 1)
    assert spec.dtype == "float32" and "no GGUF type fits" in choice.why  # nothing fits: the RAM check says so


def test_an_export_that_fits_where_no_unquantized_precision_does_is_chosen(cache, tmp_path, monkeypatch):
    inject(monkeypatch, RATES | {"gguf-q4_k_m": 1.9e-8, "gguf-q8_0": 1.9e-8})  # barely faster: fits decides
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    bf16 = estimate(source, "bfloat16").peak_bytes
    spec, choice = dtype_choice.resolve(ModelSpec(name="m", source=source), available=bf16 - 1)
    assert spec.dtype in gguf_probe.PROBE_TYPES and "the only type that fits in free memory" in choice.why
    assert "faster" not in choice.why and "bfloat16 would take ≈" in choice.why


def test_a_small_model_keeps_todays_choice_without_probing_gguf(cache, tmp_path, monkeypatch):
    inject(monkeypatch)
    no_gguf_probe(monkeypatch)
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "smol", SMOLLM2_135M)))
    assert choice.dtype == "bfloat16" and "too quick to be worth quantizing" in choice.line
    inject(monkeypatch, RATES | {"float32": 1e-8})
    no_gguf_probe(monkeypatch)
    assert dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "smol2", SMOLLM2_135M))).dtype == "float32"


def test_an_architecture_the_exporter_does_not_cover_keeps_transformers(cache, tmp_path, monkeypatch):
    inject(monkeypatch)
    no_gguf_probe(monkeypatch)
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "phi3", PHI3_MINI)))
    assert choice.dtype == "bfloat16"
    assert "no GGUF export (the GGUF exporter does not cover model_type 'phi3'" in choice.line


def test_not_quantized_when_the_export_does_not_pay_enough(cache, tmp_path, monkeypatch):
    inject(monkeypatch, RATES | {"gguf-q4_k_m": 1.6e-8, "gguf-q8_0": 1.8e-8})
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "llama-7b", LLAMA_7B)))
    assert choice.dtype == "bfloat16" and "would be only" in choice.why


def test_a_failing_gguf_probe_keeps_the_unquantized_choice(cache, tmp_path, monkeypatch):
    inject(monkeypatch)

    def broken(hidden, mlp):
        raise RuntimeError("llama.cpp could not load the probe")

    monkeypatch.setattr(gguf_probe, "gguf_costs", broken)
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "llama-7b", LLAMA_7B)))
    assert choice.dtype == "bfloat16" and "GGUF speed probe failed (RuntimeError" in choice.why


def test_an_explicit_dtype_is_never_overridden(cache, tmp_path, monkeypatch):
    inject(monkeypatch)
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    for dtype in ("bfloat16", "float32", "int8", "gguf-q8_0"):
        assert dtype_choice.resolve(ModelSpec(name="m", source=source, dtype=dtype)) == (
            ModelSpec(name="m", source=source, dtype=dtype), None)
    gguf_spec = ModelSpec(name="m", source="x.gguf", backend="llamacpp")
    assert dtype_choice.resolve(gguf_spec) == (gguf_spec, None)
    registry = load_registry()  # the embedded default pair sets its precisions: bf16 against fp32
    pair = [registry.models[name] for name in registry.default_pair]
    assert [dtype_choice.resolve(s) for s in pair] == [(s, None) for s in pair]
    assert [s.dtype for s in pair] == ["bfloat16", "float32"]
    monkeypatch.setenv(cpu_probe.DTYPE_ENV, "float32")
    spec, choice = dtype_choice.resolve(ModelSpec(name="m", source=source))
    assert spec.dtype == "float32" and choice.line == "auto: float32, set by LLM_COMPARE_DTYPE=float32"
    monkeypatch.setenv(cpu_probe.DTYPE_ENV, "fp64")
    with pytest.raises(UserError, match="LLM_COMPARE_DTYPE=fp64 is not a precision"):
        dtype_choice.resolve(ModelSpec(name="m", source=source))


@pytest.mark.parametrize("fp32, bf16, expected", [(1e-9, 2e-9, "float32"), (2e-9, 1e-9, "bfloat16")])
def test_unquantized_auto_is_the_cheapest_measured_precision(cache, monkeypatch, fp32, bf16, expected):
    inject(monkeypatch, RATES | {"float32": fp32, "bfloat16": bf16})
    spec = ModelSpec(name="m", source=str(LEGACY_FIXTURES / "qwen-7b-chat-tiny"))
    assert spec.dtype == "auto" and dtype_choice.resolve(spec)[0].dtype == expected


def test_a_precision_that_does_not_fit_falls_to_the_next(cache, monkeypatch):
    inject(monkeypatch, RATES | {"float32": 1e-9})
    spec = ModelSpec(name="m", source=str(LEGACY_FIXTURES / "qwen-7b-chat-tiny"))
    choice = dtype_choice.choose(spec, fits=lambda d: d != "float32")
    assert choice.dtype == "bfloat16" and "float32 does not fit in free memory" in choice.why


def test_doctor_says_what_auto_chose_and_why(cache, tmp_path, monkeypatch, capsys):
    from llm_compare.cli import main

    inject(monkeypatch)
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    main(["doctor", source, "--available-gib", "64"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "auto:" in ln)
    assert line.strip() == dtype_choice.resolve(ModelSpec(name="m", source=source), available=64 * 2**30)[1].line
    assert "gguf-q4_k_m, 4-bit quantized" in line


def test_ask_json_and_the_load_line_say_what_auto_chose(cache, tiny_model_dir, monkeypatch, capsys):
    """The tiny model keeps an unquantized precision, and every surface says which and why."""
    from llm_compare import progress
    from llm_compare.cli import main
    from llm_compare.pool import ModelPool

    inject(monkeypatch)
    no_gguf_probe(monkeypatch)
    assert main(["ask", "hi", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
                 "--dtype-b", "float32", "--greedy", "--max-new-tokens", "2", "--json"]) == 0
    a, b = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert a["dtype"] == "bfloat16" and a["dtype_choice"].startswith(f"auto: {a['dtype']}, ")
    assert "too quick to be worth quantizing" in a["dtype_choice"]
    assert b["dtype"] == "float32" and b["dtype_choice"] is None  # set explicitly: nothing was chosen
    assert main(["ask", "hi", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
                 "--dtype-b", "float32", "--greedy", "--max-new-tokens", "1"]) == 0
    assert capsys.readouterr().out.count(f"-- {a['dtype_choice']}\n") == 1  # under side A only
    lines = []
    with progress.reporting(lines.append):
        backend = ModelPool().get(ModelSpec(name="tiny", source=str(tiny_model_dir)))
    assert backend.dtype_choice == a["dtype_choice"]
    assert f"loading tiny · {a['dtype_choice']}" in lines


def test_the_gguf_probe_measures_an_export_at_the_width_and_caches_it(cache, monkeypatch):
    """A real (tiny) probe: every type has positive figures per parameter, its files are gone, the
    second call reads the cache. No speed is asserted."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setattr(gguf_probe, "PROBE_PARAMS", 1_000_000)
    monkeypatch.setattr(gguf_probe, "MAX_LAYERS", 2)
    from llm_compare import machine

    monkeypatch.setattr(machine, "BUSY_SHARE", 2.0)  # kept even on a busy machine: this tests caching
    found = gguf_probe.gguf_costs(256, 512)
    assert set(found) == set(gguf_probe.PROBE_TYPES)
    for c in found.values():
        assert c["width"] == "256x512" and c["turn_s"] == pytest.approx(c["prefill_s"] + cpu_probe.TURN_NEW * c["decode_s"])
        assert c["turn_s_per_param"] == pytest.approx(c["turn_s"] / c["params"]) and c["export_s_per_param"] > 0
    assert not list(cache.glob("gguf-probe-*"))  # the probe checkpoint and its exports are deleted
    monkeypatch.setattr(gguf_probe, "measure_gguf_costs", lambda *a: pytest.fail("measured again"))
    assert gguf_probe.gguf_costs(256, 512) == found
    assert any("256x512 gguf-q4_k_m" in line for line in gguf_probe.summary_lines())


def test_a_config_the_export_planner_chokes_on_keeps_transformers(cache, tmp_path, monkeypatch):
    inject(monkeypatch)
    no_gguf_probe(monkeypatch)
    monkeypatch.setattr(dtype_choice, "check_supported", lambda plan: 1 / 0)
    choice = dtype_choice.choose(ModelSpec(name="m", source=model_dir(tmp_path, "llama-7b", LLAMA_7B)))
    assert choice.dtype == "bfloat16" and "cannot plan its export: ZeroDivisionError" in choice.why


def test_export_disk_is_checked_and_a_done_export_costs_nothing(cache, tmp_path, monkeypatch):
    from collections import namedtuple

    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf import export as gguf_export
    from llm_compare.loading.gguf.plan import plan_export

    inject(monkeypatch)
    source = model_dir(tmp_path, "llama-7b", LLAMA_7B)
    spec = ModelSpec(name="m", source=source)
    real_usage = gguf_export.shutil.disk_usage
    monkeypatch.setattr(gguf_export.shutil, "disk_usage", lambda p: namedtuple("U", "free")(0))
    choice = dtype_choice.choose(spec)
    assert choice.dtype == "bfloat16" and "no GGUF type fits in free memory and disk" in choice.why
    monkeypatch.setattr(gguf_export.shutil, "disk_usage", real_usage)
    folder = gguf_export.cache_dir(plan_export(resolve_source(source)))
    folder.mkdir(parents=True)
    (folder / "gguf-q4_k_m.gguf").write_bytes(b"GGUF")  # exported before (a later load checks the file itself)
    choice = dtype_choice.choose(spec)
    assert choice.dtype == "gguf-q4_k_m" and "already exported" in choice.why and choice.export_s["gguf-q4_k_m"] == 0
    assert f"{RATES['bfloat16'] / RATES['gguf-q4_k_m']:.1f}× faster" in choice.why


def test_the_chosen_export_is_what_loads_and_answers(cache, tmp_path, monkeypatch, capsys):
    """End to end through `ask`: figures that make an export worth it for this (tiny, exportable)
    model send it through the export and llama.cpp, and the record says so."""
    pytest.importorskip("llama_cpp")
    from gguf_helpers import build_wide_model

    from llm_compare.cli import main

    slow = {d: rate * 1e5 for d, rate in RATES.items()}  # every turn of this tiny model "takes minutes"
    inject(monkeypatch, slow, {d: 0.0 for d in EXPORT_RATE})
    source = str(build_wide_model(tmp_path / "wide"))
    assert main(["ask", "hi", "--model-a", source, "--model-b", source, "--dtype-b", "float32",
                 "--greedy", "--max-new-tokens", "4", "--json"]) == 0
    a, b = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert a["dtype"] == "gguf-q4_k_m" and a["error"] is None and a["new_tokens"] == 4
    assert a["dtype_choice"].startswith("auto: gguf-q4_k_m, 4-bit quantized weights run by llama.cpp, ")
    assert b["dtype"] == "float32" and b["dtype_choice"] is None
    assert list((cache / "gguf-export").glob("*/gguf-q4_k_m.gguf"))


def test_the_pickers_load_line_says_what_auto_chose_except_in_blind_mode(cache, tiny_model_dir, monkeypatch):
    from llm_compare.pool import ModelPool
    from llm_compare.specs import Registry
    from llm_compare.ui.handlers import make_load
    from llm_compare.ui.session import AppContext, Conversation

    inject(monkeypatch)
    no_gguf_probe(monkeypatch)
    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), label="Tiny")
    ctx = AppContext(registry=Registry(models={"tiny": spec}, default_pair=("tiny", "tiny")), pool=ModelPool())
    *_, (_, shown) = make_load(ctx, "a")("tiny", Conversation())
    line = ctx.pool.get(spec).dtype_choice
    assert line.startswith("auto: bfloat16, ") and "too quick to be worth quantizing" in line
    assert shown.startswith("Tiny: loaded in ") and shown.endswith(f" s · {line}")
    blind = Conversation()
    blind.blind = True
    ctx.pool = ModelPool()
    *_, (_, shown) = make_load(ctx, "a")("tiny", blind)
    assert "auto:" not in shown  # it would hint at the hidden model
