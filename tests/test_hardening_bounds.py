"""Issue 21: numbers, files and headers a user can make huge get a range or a cap, one line each.

Each test is one case of the issue (numbered as there); each failed before its fix. Checks that
would hurt the machine on the old code (a million threads, reading /dev/zero) come after a cheap
check of the same rule, so the old code fails before it reaches them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build_tiny_chat_model
from llm_compare.cli import main
from llm_compare.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# -- 1. threads, context, max new tokens and rounds have an upper bound --------------------------

def test_a_million_threads_is_refused_in_one_line_by_cli_app_and_registry(tmp_path):
    from llm_compare.app_flags import build_parser, check_flags
    from llm_compare.specs import ModelSpec, max_threads

    most = max_threads()
    assert most == 4 * os.cpu_count()
    with pytest.raises(UserError, match=f"--threads-a must be a whole number from 1 to {most:,}"):
        check_flags(build_parser().parse_args(["--threads-a", "1000000"]))
    with pytest.raises(UserError, match=f"'m': threads must be a whole number from 1 to {most:,}"):
        ModelSpec(name="m", source="x", threads=most + 1)
    assert ModelSpec(name="m", source="x", threads=most).threads == most
    # only now the real command: on the old code it started a million threads and took the machine down
    proc = subprocess.run([sys.executable, "-m", "llm_compare", "ask", "hi", "--threads-a", "1000000"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: --threads-a must be a whole number from 1 to {most:,} ({4} x this machine's {os.cpu_count()} "
        "cores) (got 1000000); leave it out for the thread policy"]


@pytest.mark.parametrize("argv, problem", [
    (["ask", "hi", "--context-a", str(2**40)], "--context-a (tokens) must be a whole number from 256 to 2,147,483,647"),
    (["ask", "hi", "--max-new-tokens", str(10**9)], "max new tokens must be a whole number from 1 to 32,768"),
    (["leaderboard", "--rounds", str(10**9)], "--rounds must be a whole number from 100 to 100,000"),
    (["leaderboard", "--rounds", "5"], "--rounds must be a whole number from 100 to 100,000"),
])
def test_other_numbers_out_of_range_are_one_line_naming_the_range(argv, problem, capsys, tmp_path):
    assert main(argv + (["--db", str(tmp_path / "none.db")] if argv[0] == "leaderboard" else [])) == 2
    assert one_error_line(capsys).startswith("error: " + problem)


# -- 4. a GGUF header nesting 5000 arrays, or claiming huge counts --------------------------------

def gguf_with_value(path: Path, value: bytes) -> Path:
    """A GGUF v3 file without tensors whose one metadata key "x" holds `value` (type + payload)."""
    key = b"x"
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + value
    path.write_bytes(data + b"\0" * (-len(data) % 32))  # the (empty) tensor data starts aligned
    return path


def nested_arrays(depth: int) -> bytes:
    return struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQ", 4, 0)


def test_gguf_header_nesting_5000_arrays_is_one_line_for_ask_and_arch(tmp_path, capsys):
    deep = gguf_with_value(tmp_path / "deep.gguf", nested_arrays(5000))
    assert 50_000 < deep.stat().st_size < 70_000  # the 60 KB file
    assert main(["ask", "hi", "--model-a", str(deep), "--max-new-tokens", "2"]) == 2
    assert "deep.gguf is not a readable GGUF file (arrays nested more than 4 deep)" in one_error_line(capsys)
    assert main(["arch", str(deep), "--no-bandwidth"]) == 2
    assert "arrays nested more than 4 deep" in one_error_line(capsys)


def test_gguf_arrays_nested_as_deep_as_allowed_still_read(tmp_path):
    from llm_compare.loading.gguf.header import check_gguf

    assert check_gguf(gguf_with_value(tmp_path / "ok.gguf", nested_arrays(4))).tensors == ()


@pytest.mark.parametrize("value, what", [
    (struct.pack("<IIQ", 9, 8, 2**40), "array items"),  # an array of 2**40 strings
    (struct.pack("<IQ", 8, 2**40), "string bytes"),  # one string of a terabyte
])
def test_gguf_header_counts_beyond_any_model_are_refused(value, what, tmp_path):
    from llm_compare.loading.gguf.header import check_gguf

    with pytest.raises(UserError, match=f"{2**40:,} {what} at byte"):
        check_gguf(gguf_with_value(tmp_path / "big.gguf", value + b"\0" * 64))


def test_gguf_header_sizes_no_model_has_are_refused_before_a_model_is_built():
    from llm_compare.loading.gguf.header import GgufHeader
    from llm_compare.loading.gguf.unpack import llama_config

    meta = {"general.architecture": "llama", "llama.embedding_length": 64, "llama.attention.head_count": 4,
            "tokenizer.ggml.tokens": ["a", "b"]}
    assert llama_config(GgufHeader(3, (), 0, meta | {"llama.block_count": 2})).num_hidden_layers == 2
    with pytest.raises(UserError, match="invalid in the GGUF header: num_hidden_layers = 1000000000"):
        llama_config(GgufHeader(3, (), 0, meta | {"llama.block_count": 10**9}))


# -- 5. the memory check caps the context of a directory exported to gguf-* ------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("bounds-tiny"), context=256)


@pytest.mark.parametrize("dtype", ["gguf-q8_0", "gguf-f16"])
def test_memory_check_caps_an_exported_directorys_context_at_its_trained_context(tiny_dir, dtype):
    from llm_compare.loading.memory import check_fits, estimate
    from llm_compare.specs import ModelSpec

    trained = estimate(str(tiny_dir), dtype, context=256)  # the model was trained for 256 tokens
    assert estimate(str(tiny_dir), dtype, context=4096) == trained
    assert estimate(str(tiny_dir), dtype, context=10**9) == trained
    assert estimate(str(tiny_dir), dtype, context=128) != trained  # below the cap, the context counts
    spec = ModelSpec(name="t", source=str(tiny_dir), dtype=dtype, context=10**9)
    assert check_fits(spec, available=trained.peak_bytes) == trained


# -- 6. --prompt-file and standard input are read with a cap -------------------------------------

def test_prompt_file_and_stdin_beyond_the_cap_are_one_line(tmp_path, monkeypatch, capsys):
    import io

    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (9 << 20))
    assert main(["ask", "--prompt-file", str(big)]) == 2
    assert one_error_line(capsys) == (f"error: --prompt-file {big} holds more than 8 MiB, more than any model "
                                      "reads; pass an existing text file of a prompt")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"b" * (9 << 20)), encoding="utf-8"))
    assert main(["ask", "-"]) == 2
    assert "standard input holds more than 8 MiB" in one_error_line(capsys)
    assert main(["ask", "--prompt-file", "/dev/zero"]) == 2  # never ends: the old code read until memory ran out
    assert "--prompt-file /dev/zero holds more than 8 MiB" in one_error_line(capsys)


def test_registry_and_auth_files_are_read_with_the_same_cap(tmp_path):
    from llm_compare.app_flags import parse_auth
    from llm_compare.specs import load_registry

    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (9 << 20))
    for path in (big, Path("/dev/zero")):  # /dev/zero last: the old code read it until memory ran out
        with pytest.raises(UserError, match=f"registry file {path} holds more than 8 MiB"):
            load_registry(path)
        with pytest.raises(UserError, match=f"--auth-file {path} holds more than 8 MiB"):
            parse_auth([], str(path))


# -- 8. arch shows impossible config values as invalid, never as facts; bad URLs refused ----------

ABSURD = {"num_hidden_layers": -3, "hidden_size": 10**12, "num_attention_heads": 0}


@pytest.mark.parametrize("key, value", list(ABSURD.items()))
def test_arch_shows_an_impossible_config_value_as_invalid(key, value, tmp_path, capsys):
    config = {"model_type": "llama", "vocab_size": 400, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256} | {key: value}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["arch", str(tmp_path), "--json", "--no-bandwidth"]) == 0
    facts = json.loads(capsys.readouterr().out)
    fact = {"num_hidden_layers": "layers", "num_attention_heads": "attention_heads"}.get(key, key)
    assert facts[fact] is None
    assert facts["missing"][fact].startswith(f"invalid in config.json: {key} = {value}")
    assert facts["params_total"] is None and facts["weights_bytes"] is None and facts["head_dim"] in (None, 16)
    assert any(n.startswith("invalid in config.json") for n in facts["notes"])
    assert main(["arch", str(tmp_path), "--no-bandwidth"]) == 0
    assert f"invalid in config.json: {key} = {value}" in capsys.readouterr().out
    (tmp_path / "model.safetensors").write_bytes(b"")  # a loadable-looking directory: loading refuses it
    with pytest.raises(UserError, match=f"invalid in {tmp_path / 'config.json'}: {key} = {value}"):
        __import__("llm_compare.loading", fromlist=["x"]).resolve_source(str(tmp_path))


@pytest.mark.parametrize("argv", [["arch", "http://[::1", "--no-bandwidth"], ["ask", "hi", "--model-a", "http://[::1"]])
def test_a_malformed_url_is_refused_not_taken_as_a_server(argv, capsys):
    assert main(argv) == 2
    assert "'http://[::1' is not a valid http(s) base URL" in one_error_line(capsys)


# -- 9. the app caps uploads -------------------------------------------------------------------

def test_the_app_refuses_an_upload_over_its_cap(tmp_path):
    import httpx

    from conftest import start_app

    big_size = 4 << 20
    with start_app(["--model-a", "smollm2-llamacpp", "--model-b", "smollm2-llamacpp", "--no-votes"], tmp_path) as url:
        small = httpx.post(f"{url}/gradio_api/upload", files={"files": ("s.txt", b"x" * 1000)}, timeout=60)
        big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("b.txt", b"x" * big_size)}, timeout=60)
    assert small.status_code == 200, small.text
    assert big.status_code == 413, (big.status_code, big.text[:300])
    from llm_compare.specs import MAX_UPLOAD_BYTES

    assert 1000 <= MAX_UPLOAD_BYTES < big_size
