"""`python -m llm_compare arch`: the table, --json, and bad input (one-line errors, partial facts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import LEGACY_FIXTURES
from llm_compare.architecture.table import render_html, render_markdown
from llm_compare.cli import main

CHATGLM3 = LEGACY_FIXTURES / "chatglm3-6b-tiny"
QWEN = LEGACY_FIXTURES / "qwen-7b-chat-tiny"


def arch(capsys, *args) -> tuple[int, str, str]:
    code = main(["arch", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def arch_json(capsys, *args) -> list[dict]:
    code, out, err = arch(capsys, *args, "--json", "--no-bandwidth")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.skipif(not LEGACY_FIXTURES.is_dir(), reason="legacy fixtures not present")
def test_table_for_both_seed_fixtures(capsys, monkeypatch):
    import llm_compare.architecture as architecture

    monkeypatch.setattr(architecture, "memory_bandwidth", lambda: 40e9)  # an injected figure: no probe, any machine
    code, out, err = arch(capsys, CHATGLM3, QWEN)
    assert code == 0, err
    lines = out.splitlines()
    kind = next(line for line in lines if "attention kind" in line)
    assert kind.startswith("≠") and "GQA (2 KV groups" in kind and "MHA" in kind
    assert any(line.startswith("≠ rotated part of each head") and "50%" in line for line in lines)
    assert any("decode ceiling bf16" in line and "tok/s" in line for line in lines)
    code, out, err = arch(capsys, CHATGLM3, "--json")
    facts = json.loads(out)
    assert facts["memory_bandwidth_bytes_per_s"] == 40e9
    ceilings = facts["decode_ceiling_tokens_per_s"]
    monkeypatch.setattr(architecture, "memory_bandwidth", lambda: 80e9)
    code, out, err = arch(capsys, CHATGLM3, "--json")
    assert json.loads(out)["decode_ceiling_tokens_per_s"] == {k: 2 * v for k, v in ceilings.items()}


def test_json_for_the_embedded_model(capsys):
    (facts,) = arch_json(capsys, "embedded:smollm2")
    assert facts["family"].startswith("llama") and facts["transformers_class"] == "LlamaForCausalLM"
    assert facts["layers"] > 0 and facts["params_total"] > 0 and facts["kv_cache_bytes_per_token"] > 0
    assert facts["context_length"] == facts["trained_context_length"]


def test_not_a_model_exits_2_with_one_line(capsys, tmp_path):
    code, out, err = arch(capsys, tmp_path, "--no-bandwidth")
    assert code == 2 and out == ""
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "config.json" in err


def test_missing_fields_are_not_stated(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                      "num_attention_heads": 4}))
    (facts,) = arch_json(capsys, tmp_path)
    assert facts["hidden_size"] == 64 and facts["head_dim"] == 16
    assert facts["layers"] is None and facts["missing"]["layers"] == "not stated"
    assert facts["params_total"] is None and facts["missing"]["params_total"] == "unknown"
    code, out, _ = arch(capsys, tmp_path, "--no-bandwidth")
    assert code == 0 and "not stated" in out


def test_unknown_architecture_shows_what_it_can(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mysterynet", "hidden_size": 48,
                                                      "num_hidden_layers": 3, "architectures": ["MysteryLM"]}))
    (facts,) = arch_json(capsys, tmp_path)
    assert (facts["family"], facts["layers"], facts["hidden_size"]) == ("mysterynet", 3, 48)
    assert facts["attention_heads"] is None and facts["missing"]["attention_heads"] == "not stated"


def write_gguf(path, arch: str) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_with_an_unfamiliar_architecture(capsys, tmp_path):
    path = tmp_path / "odd.gguf"
    write_gguf(path, "mysterynet")
    (facts,) = arch_json(capsys, path)
    assert facts["family"] == "mysterynet" and facts["layers"] == 2 and facts["hidden_size"] == 8
    assert facts["transformers_class"] is None and "llama.cpp only" in facts["runs_as"]
    assert facts["params_embeddings"] == 80 and facts["vocab_size"] == 10
    assert facts["tokenizer_kind"] is None  # no tokenizer in the header: unknown, not guessed


def test_broken_gguf_exits_2(capsys, tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    code, _, err = arch(capsys, path, "--no-bandwidth")
    assert code == 2 and err.startswith("error:") and "broken.gguf" in err and len(err.splitlines()) == 1


def test_remote_server_says_what_cannot_be_known(capsys):
    (facts,) = arch_json(capsys, "http://127.0.0.1:9/v1")
    assert facts["params_total"] is None and facts["missing"]["params_total"] == "unknown"
    assert any("remote server" in n for n in facts["notes"])
    code, out, _ = arch(capsys, "http://127.0.0.1:9/v1", "--no-bandwidth")
    assert code == 0 and "remote server" in out


def test_model_text_is_escaped():
    facts = [{"name": "a", "label": "<script>alert(1)</script>", "family": "x|y*_", "notes": ["<b>n</b>"],
              "missing": {}},
             {"name": "b", "label": "b", "family": "z", "missing": {}}]
    page = render_html(facts)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>n" not in page
    assert '<tr class=diff><td class="label">family' in page
    md = render_markdown(facts)
    assert "<script>" not in md and "x&#124;y&#42;&#95;" in md
    assert "| ≠ | Model · family |" in md


def test_report_starts_with_the_architecture_table(tmp_path, capsys):
    from conftest import build_tiny_chat_model

    a = build_tiny_chat_model(tmp_path / "a", context=256)
    b = build_tiny_chat_model(tmp_path / "b", context=512, seed=1)
    prompts = tmp_path / "p.toml"
    prompts.write_text('[[prompts]]\ngroup = "g"\nlabel = "one"\ntext = "hello"\n', encoding="utf-8")
    code = main(["report", "--model-a", str(a), "--model-b", str(b), "--prompts", str(prompts), "--no-store",
                 "--max-new-tokens", "2", "--greedy", "--out", str(tmp_path / "out"), "--dtype-a", "float32",
                 "--dtype-b", "float32"])
    assert code == 0, capsys.readouterr().err
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.index("## Architecture") < md.index("## Summary")
    assert "| ≠ | Positions · configured context | **256** | **512** |" in md
    assert "|  | Shape · layers | 2 | 2 |" in md
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert page.index("Architecture") < page.index("<h2>Summary</h2>") and "class=diff" in page


def test_registry_names_share_one_file_and_say_how_they_run(capsys):
    llamacpp, bf16, fp32 = arch_json(capsys, "smollm2-llamacpp", "smollm2-bf16", "smollm2-fp32")
    assert llamacpp["runs_as"].startswith("llama.cpp") and "transformers" in bf16["runs_as"]
    assert bf16["params_total"] == fp32["params_total"] == llamacpp["params_total"]
    assert (bf16["label"], fp32["label"]) == ("SmolLM2-135M-Instruct · bf16", "SmolLM2-135M-Instruct · fp32")
