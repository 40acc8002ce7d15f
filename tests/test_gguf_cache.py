"""The GGUF export cache: reuse, corrupt files, killed exports, refusals, and bad input messages."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from gguf_helpers import GLM, QWEN
from llm_compare.backends import open_backend
from llm_compare.errors import UserError
from llm_compare.loading import load_model, resolve_source
from llm_compare.loading.gguf import export as gguf_export
from llm_compare.loading.gguf.export import cached_problem, exported_gguf
from llm_compare.specs import ModelSpec

pytestmark = pytest.mark.skipif(not GLM.is_dir(), reason="legacy fixtures not present")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_second_start_reuses_the_cached_file(monkeypatch):
    steps = []
    first = exported_gguf(resolve_source(str(GLM)), "gguf-f16", lambda *a: steps.append(a))
    assert steps and steps[-1][0] == steps[-1][1]  # progress ran to its total
    assert cached_problem(first) is None and not list(first.parent.glob("*.partial-*"))

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(gguf_export, "build", no_export)
    assert exported_gguf(resolve_source(str(GLM)), "gguf-f16") == first


def test_corrupt_cached_file_is_rebuilt_and_said_once(caplog):
    path = exported_gguf(resolve_source(str(GLM)), "gguf-f32")
    with path.open("r+b") as f:  # overwrite bytes of the header's metadata
        f.seek(64)
        f.write(b"\xff" * 32)
    with caplog.at_level(logging.WARNING, logger="llm_compare.loading.gguf.export"):
        again = exported_gguf(resolve_source(str(GLM)), "gguf-f32")
        exported_gguf(resolve_source(str(GLM)), "gguf-f32")
    said = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(said) == 1 and "rebuilding" in said[0]
    assert again == path and cached_problem(path) is None


def test_truncated_cached_file_is_never_loaded():
    path = exported_gguf(resolve_source(str(GLM)), "gguf-f32")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert "changed" in cached_problem(path)
    backend = open_backend(ModelSpec(name="glm", source=str(GLM), dtype="gguf-f32"))
    try:
        assert cached_problem(backend.path) is None
    finally:
        backend.close()


KILLED_EXPORT = textwrap.dedent("""
    import sys, time
    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.export import exported_gguf

    def slow(done, total, what):
        print(done, total, flush=True)
        time.sleep(0.2)

    exported_gguf(resolve_source(sys.argv[1]), "gguf-q8_0", slow)
""")


def test_export_killed_mid_way_is_redone_cleanly(private_cache):
    env = dict(os.environ, PYTHONPATH=str(REPO), LLM_COMPARE_CACHE=str(private_cache))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(GLM)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few tensors written, the file is far from complete
            assert proc.stdout.readline(), "the export ended early"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    folder = next((private_cache / "gguf-export").iterdir())
    assert list(folder.glob("*.partial-*")) and not (folder / "gguf-q8_0.gguf").exists()
    path = exported_gguf(resolve_source(str(GLM)), "gguf-q8_0")
    assert cached_problem(path) is None
    assert sorted(p.name for p in folder.iterdir()) == ["gguf-q8_0.gguf", "gguf-q8_0.gguf.json", "gguf-q8_0.lock"]


def one_line_error(spec) -> str:
    with pytest.raises(UserError) as err:
        open_backend(spec)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_not_enough_disk_is_refused_with_numbers(monkeypatch):
    monkeypatch.setattr(gguf_export.shutil, "disk_usage", lambda p: type("U", (), {"free": 1024**2})())
    message = one_line_error(ModelSpec(name="q", source=str(QWEN), dtype="gguf-q4_k_m"))
    assert "free disk" in message and "GiB" in message and "LLM_COMPARE_CACHE" in message
    assert not list((gguf_export.cache_root() / "gguf-export").rglob("*.gguf"))


def test_not_enough_ram_is_refused_with_numbers(monkeypatch):
    monkeypatch.setattr(gguf_export.psutil, "virtual_memory", lambda: type("M", (), {"available": 1024})())
    message = one_line_error(ModelSpec(name="q", source=str(QWEN), dtype="gguf-f16"))
    assert "free RAM" in message and "GiB" in message


def test_a_directory_the_loaders_refuse_gets_the_same_message(tmp_path):
    broken = tmp_path / "glm"
    broken.mkdir()
    for f in GLM.iterdir():
        if not f.name.startswith("reference"):
            (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "pre_seq_len": 128}))
    with pytest.raises(UserError) as transformers_side:
        load_model(ModelSpec(name="glm", source=str(broken), dtype="float32"))
    assert one_line_error(ModelSpec(name="glm", source=str(broken), dtype="gguf-f32")) == str(transformers_side.value)


def test_an_uncovered_architecture_is_named_with_what_works(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(tmp_path)
    message = one_line_error(ModelSpec(name="g", source=str(tmp_path), dtype="gguf-q8_0"))
    assert "'gpt2'" in message and "float32" in message and "chatglm" in message.lower()


def test_a_gguf_file_with_a_gguf_dtype_is_explained():
    from llm_compare.loading import embedded_path

    message = one_line_error(ModelSpec(name="s", source=str(embedded_path("smollm2")), dtype="gguf-q8_0"))
    assert "llamacpp" in message


def test_cli_accepts_gguf_dtypes():
    from llm_compare.cli import build_parser

    args = build_parser().parse_args(["ask", "hi", "--dtype-a", "gguf-q4_k_m", "--dtype-b", "gguf-f32"])
    assert (args.dtype_a, args.dtype_b) == ("gguf-q4_k_m", "gguf-f32")


def test_a_cached_export_is_found_without_writing_anything(monkeypatch):
    """The reuse path only reads: the second lookup returns the same file, untouched, and never exports."""
    from llm_compare.loading.gguf import export as gguf_export

    first = exported_gguf(resolve_source(str(QWEN)), "gguf-f16")
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in first.parent.iterdir())
    monkeypatch.setattr(gguf_export, "write_gguf", lambda *a, **k: pytest.fail("a cached export was written again"))
    assert exported_gguf(resolve_source(str(QWEN)), "gguf-f16") == first
    assert sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in first.parent.iterdir()) == before
