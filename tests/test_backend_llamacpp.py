"""The llama.cpp backend on the embedded GGUF: the same engine behaviours as the transformers backend,
plus a real llama_cpp.server compared against the transformers backend through `stream_pair`."""

from __future__ import annotations

import os
import threading

import pytest

from conftest import quiet_machine
from llm_compare.backends.llamacpp import LlamaCppBackend
from llm_compare.engine import Job, stream_pair, stream_reply
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec
from llm_compare.threads import STREAMS

MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
GREEDY = GenerationParams(max_new_tokens=24, greedy=True)


def spec(**fields):
    return ModelSpec(name="smollm2-llamacpp", source="embedded:smollm2", backend="llamacpp", **fields)


@pytest.fixture(scope="module")
def backend():
    b = LlamaCppBackend(spec(threads=1))
    yield b
    b.close()


def reply(b, params=GREEDY, messages=MESSAGES):
    return list(stream_reply(b, messages, params))[-1]


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("llamacpp-")]


def test_prompt_ids_equal_transformers_template(backend):
    from transformers import AutoTokenizer

    from llm_compare.chat_formats import TemplateFormat
    from llm_compare.loading import embedded_path
    from llm_compare.loading.gguf.cache import convert_gguf

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf(embedded_path("smollm2")))
    fmt = TemplateFormat(tokenizer)
    conversation = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "你好，介绍一下你自己 — and in English?"},
        {"role": "assistant", "content": "Hi! I'm SmolLM."},
        {"role": "user", "content": [{"type": "text", "text": "What's 2+2?"}]},  # Gradio 6 content blocks
    ]
    for messages in (MESSAGES, conversation):
        assert backend.prompt.encode(messages) == fmt.encode(messages)


def test_greedy_reply_is_deterministic_and_metrics_consistent(backend):
    chunks = list(backend.stream(MESSAGES, GREEDY, threading.Event()))
    assert sum(c.tokens for c in chunks) == GREEDY.max_new_tokens
    assert all(c.tokens == 1 for c in chunks)
    assert chunks[0].prompt_tokens == backend.count_prompt_tokens(MESSAGES)
    first = reply(backend)
    second = reply(backend)
    assert first.text == second.text == "".join(c.text for c in chunks).strip()
    m = first.metrics
    assert m.new_tokens == GREEDY.max_new_tokens and first.finish_reason == "length"
    assert 0 < m.ttft_s <= m.elapsed_s and m.tokens_per_s > 0
    assert not worker_threads()


def test_reply_ends_at_end_of_turn(backend):
    """The reply stops at the model's end-of-turn token, and is what llama.cpp itself completes for
    the same prompt ids (its own greedy completion in this run, not words the model "should" know)."""
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    final = reply(backend, GenerationParams(max_new_tokens=200, greedy=True), messages)
    assert final.finish_reason == "stop" and 0 < final.metrics.new_tokens < 200
    assert final.text and "<|im_end|>" not in final.text
    llm = backend._idle.get()
    try:
        llm.reset()
        own = llm.create_completion(backend.prompt.encode(messages), max_tokens=200, temperature=0.0, top_k=1,
                                    top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    finally:
        backend._idle.put(llm)
    assert final.text == own["choices"][0]["text"].strip()


def test_stop_within_one_token(backend):
    stop = threading.Event()
    after_stop = 0
    for i, chunk in enumerate(backend.stream(MESSAGES, GenerationParams(max_new_tokens=200, greedy=True), stop)):
        if stop.is_set():
            after_stop += chunk.tokens
        if i == 3:
            stop.set()
    assert after_stop <= 1
    assert not worker_threads()


def test_closing_the_iterator_ends_the_worker(backend):
    gen = backend.stream(MESSAGES, GenerationParams(max_new_tokens=200, greedy=True), threading.Event())
    next(gen)
    gen.close()
    assert not worker_threads()
    assert reply(backend).metrics.new_tokens == GREEDY.max_new_tokens  # the instance went back to the pool


def test_seeded_sampling_is_reproducible(backend):
    params = GenerationParams(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=1234)
    assert reply(backend, params).text == reply(backend, params).text


def test_repetition_penalty_is_applied(backend):
    """With and without the penalty, our stream equals llama.cpp's own completion call with that penalty.
    Both evaluate the whole prompt in one batch (prefix reuse off here: with its f16 KV cache,
    llama.cpp's logits depend on how the prompt was split into batches, in the last bits)."""
    messages = [{"role": "user", "content": "Repeat the word cat twenty times."}]
    ids = backend.prompt.encode(messages)
    texts = {}
    for penalty in (1.0, 1.5):
        backend.reuse = False
        try:
            ours = reply(backend, GenerationParams(max_new_tokens=30, greedy=True, repetition_penalty=penalty), messages)
        finally:
            backend.reuse = True
        llm = backend._open()  # a fresh instance with the backend's settings (a used one reuses its cache)
        try:
            theirs = llm.create_completion(ids, max_tokens=30, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                           typical_p=1.0, repeat_penalty=penalty)
        finally:
            llm.close()
        assert ours.text == theirs["choices"][0]["text"].strip()
        assert ours.metrics.new_tokens == theirs["usage"]["completion_tokens"]
        texts[penalty] = ours.text
    assert texts[1.0] != texts[1.5]  # the penalty reached the sampler


def test_two_streams_at_once_on_one_model(backend):
    """Both panes on the same model: each stream gets its own llama.cpp instance, same greedy text."""
    alone = reply(backend).text
    states = list(stream_pair(Job("a", backend, MESSAGES), Job("b", backend, MESSAGES), GREEDY))
    assert states[-1].a.status == states[-1].b.status == "done"
    assert states[-1].a.text == states[-1].b.text == alone
    assert not worker_threads()


def test_raw_format_and_unsupported_formats():
    raw = LlamaCppBackend(spec(chat_format="raw", threads=1))
    try:
        assert raw.count_prompt_tokens([{"role": "user", "content": "Hello"}]) == 1
        story = [{"role": "user", "content": "Once upon a time, there was a little"}]
        assert reply(raw, GenerationParams(max_new_tokens=4, greedy=True), story).metrics.new_tokens == 4
    finally:
        raw.close()
    with pytest.raises(UserError, match="chatglm3.*llamacpp"):
        LlamaCppBackend(spec(chat_format="chatglm3"))


def test_bad_gguf_is_a_user_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(256))
    with pytest.raises(UserError, match="broken.gguf"):
        LlamaCppBackend(ModelSpec(name="bad", source=str(bad), backend="llamacpp"))
    with pytest.raises(UserError, match="does not exist"):
        LlamaCppBackend(ModelSpec(name="gone", source=str(tmp_path / "gone.gguf"), backend="llamacpp"))


# --- a real OpenAI-compatible server (llama-cpp-python[server]) against the transformers backend ---



def test_real_server_pane_against_transformers_pane(llama_server, backend):
    from llm_compare.backends.openai import OpenAIBackend
    from llm_compare.backends.transformers import TransformersBackend
    from llm_compare.loading import load_model

    local_spec = ModelSpec(name="smollm2-fp32", source="embedded:smollm2", dtype="float32", threads=1)
    local = TransformersBackend(local_spec, load_model(local_spec))
    remote = OpenAIBackend(ModelSpec(name="server", source=llama_server, backend="openai", timeout_s=60))
    before = STREAMS.running
    states = list(stream_pair(Job("a", remote, MESSAGES), Job("b", local, MESSAGES), GREEDY))
    a, b = states[-1].a, states[-1].b
    assert a.status == "done" and b.status == "done", (a.error, b.error)
    # the server's stream uses another machine's CPU: no seat in the account, no thread count shown
    assert a.metrics.threads is None and a.metrics.streams_running is None
    assert b.metrics.streams_running == before + 1 and STREAMS.running == before
    assert a.metrics.new_tokens == GREEDY.max_new_tokens == b.metrics.new_tokens
    # llama-cpp-python's server sends no usage block when streaming: one chunk per token is counted
    assert a.metrics.prompt_tokens in (None, b.metrics.prompt_tokens)
    assert 0 < a.metrics.ttft_s <= a.metrics.elapsed_s
    # same weights, same engine, same template: the server's greedy reply is the in-process one
    assert a.text == reply(backend).text
    # transformers dequantizes Q4_1 to fp32, so its text may differ from llama.cpp's; beside a server
    # stream it is the reply it gives alone
    assert b.text == reply(local).text


def test_real_server_wrong_model_name_fails_only_its_pane(llama_server, backend):
    from llm_compare.backends.openai import OpenAIBackend

    # llama_cpp.server with one model ignores the name; a wrong *path* is what it rejects with 404
    wrong = OpenAIBackend(ModelSpec(name="server", source=llama_server + "/nope", backend="openai", timeout_s=30))
    states = list(stream_pair(Job("a", wrong, MESSAGES), Job("b", backend, MESSAGES), GREEDY))
    assert states[-1].a.status == "error" and "404" in states[-1].a.error
    assert states[-1].b.status == "done"


def test_amx_state_forced_by_env_and_skipped_without_amx(monkeypatch, tmp_path):
    from llm_compare.backends import llamacpp_amx

    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    monkeypatch.setenv(llamacpp_amx.MODE_ENV, "works")
    assert llamacpp_amx.llama_kwargs(tmp_path / "m.gguf") == {}
    monkeypatch.setenv(llamacpp_amx.MODE_ENV, "broken")
    assert llamacpp_amx.llama_kwargs(tmp_path / "m.gguf") == {"n_ubatch": 1}
    monkeypatch.delenv(llamacpp_amx.MODE_ENV)
    monkeypatch.setattr(llamacpp_amx, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert llamacpp_amx.amx_state(tmp_path / "m.gguf") == "none"
    assert not (tmp_path / "probes" / "llama_amx.json").exists()  # no probe without AMX


@pytest.mark.skipif(not {"amx_int8", "amx_tile"} & __import__("llm_compare.backends.llamacpp_amx", fromlist=["x"]).cpu_flags(),
                    reason="the CPU does not advertise AMX")
def test_amx_probe_runs_once_and_is_cached(monkeypatch, tmp_path):
    from llm_compare.backends import llamacpp_amx

    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    monkeypatch.delenv(llamacpp_amx.MODE_ENV, raising=False)
    quiet_machine(monkeypatch)  # cached as on an idle machine, however busy this one is
    state = llamacpp_amx.amx_state(tmp_path / "m.gguf")
    assert state in ("works", "broken")
    assert state in (tmp_path / "probes" / "llama_amx.json").read_text()
    monkeypatch.setattr(llamacpp_amx.subprocess, "run", lambda *a, **k: pytest.fail("probed twice"))
    assert llamacpp_amx.amx_state(tmp_path / "m.gguf") == state


def test_context_is_reserved_as_asked_and_a_longer_prompt_is_refused_with_the_fix():
    """`context` (registry field, --context-a/-b) sizes llama.cpp's KV cache; a prompt that does not
    fit is refused before generation and the message says how to get more."""
    small = LlamaCppBackend(spec(context=256))
    try:
        llm = small._idle.get()
        small._idle.put(llm)
        assert llm.n_ctx() == 256 and small.context_length == 256
        long = [{"role": "user", "content": "count the words: " + "one two three four five six " * 60}]
        with pytest.raises(UserError, match=r"takes at most 256; .*larger `context`"):
            list(stream_reply(small, long, GREEDY))
        assert list(stream_reply(small, MESSAGES, GREEDY))[-1].done  # a short prompt still answers
    finally:
        small.close()
    with pytest.raises(UserError, match=r"context \(tokens\) must be a whole number from 256 to"):
        spec(context=100)


def test_a_second_instance_is_opened_only_when_ram_holds_its_copy(monkeypatch):
    """Each llama.cpp instance holds its own repacked weights and KV cache (≈ 4 GiB for Qwen-7B):
    two streams on one model share one instance, one after the other, when RAM has no room for two."""
    small = LlamaCppBackend(spec(threads=1))
    try:
        assert small.instance_bytes > 0  # measured at load: what one more copy would hold
        monkeypatch.setattr(small, "instance_bytes", 1 << 60)  # no machine has room for that
        alone = reply(small).text
        states = list(stream_pair(Job("a", small, MESSAGES), Job("b", small, MESSAGES), GREEDY))
        assert states[-1].a.status == states[-1].b.status == "done"
        assert states[-1].a.text == states[-1].b.text == alone
        assert small._count == 1  # the second stream waited for the first one's instance
        monkeypatch.setattr(small, "instance_bytes", 0)
        list(stream_pair(Job("a", small, MESSAGES), Job("b", small, MESSAGES), GREEDY))
        assert small._count == 2  # with room, each stream of the pair gets its own
    finally:
        small.close()
