"""The openai backend against a tiny real HTTP server (tests/openai_server.py), one behaviour per model name.

Each fault (401, unknown model, malformed chunk, connection cut mid-stream, silent server) must
end as a UserError in its own pane while the other pane finishes, and nothing may hang.
"""

from __future__ import annotations

import threading
import time

import pytest

from llm_compare.backends.openai import OpenAIBackend, chat_url
from llm_compare.engine import Job, stream_pair, stream_reply
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.specs import MAX_NEW_TOKENS, ModelSpec
from openai_server import OpenAIServer
from openai_server import completion_chunk as chunk

WORDS = ["Hello", " from", " the", " fake", " server", "."]
MESSAGES = [{"role": "user", "content": "Say hello."}]
GREEDY = GenerationParams(max_new_tokens=32, greedy=True)


GOOD_MODELS = ("good", "only-model", "needs-key", "old-server", "strict", "no-usage", "malformed", "cut", "silent",
               "endless", "usage-differs")


def fake_reply(h, body):
    """The scripted server: its behaviour is chosen by the request's model name."""
    model = body["model"]
    if model == "needs-key" and h.headers.get("Authorization") != "Bearer sekrit":
        return h.send_json(401, {"error": {"message": "Incorrect API key provided"}})
    if model == "old-server" and "stream_options" in body:
        return h.send_json(400, {"error": {"message": "unknown field stream_options"}})
    extensions = sorted(set(body) & {"top_k", "min_p", "repetition_penalty", "repeat_penalty"})
    if model == "strict" and extensions:  # as OpenAI's own API answers unknown fields
        return h.send_json(400, {"error": {"message": f"Unrecognized request argument supplied: {extensions[0]}"}})
    if model not in GOOD_MODELS:
        return h.send_json(404, {"error": {"message": f"The model `{model}` does not exist"}})
    h.start_stream()
    if model == "silent":
        h.server.release.wait(30)
        return
    if model == "endless":
        try:
            for i in range(100000):
                h.send_event(chunk(f" w{i}"))
                time.sleep(0.01)
        except OSError:
            h.server.disconnected.set()
        return
    words = WORDS[:2] if model in ("malformed", "cut", "usage-differs") else WORDS
    for w in words:
        h.send_event(chunk(w))
    if model == "malformed":
        h.send_raw("data: {this is not json\n\n")
    if model == "cut":
        h.wfile.write(b"40\r\ndata: {\"choi")  # half a chunk, then the connection drops
        h.wfile.flush()
        h.close_connection = True
        return
    h.send_event(chunk(finish="stop"))
    if model == "usage-differs":
        h.send_event(chunk(usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}))
    elif model != "no-usage" and "stream_options" in body:
        h.send_event(chunk(usage={"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)}))
    h.end_stream()


@pytest.fixture
def server():
    with OpenAIServer(fake_reply) as srv:
        yield srv


def backend(server, model, **fields):
    fields.setdefault("timeout_s", 5.0)
    return OpenAIBackend(ModelSpec(name=model, source=server.url, backend="openai", remote_model=model, **fields))


def run(b, params=GREEDY):
    updates = list(stream_reply(b, MESSAGES, params))
    return updates[-1]


def test_chat_url_accepts_base_with_or_without_v1():
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_streams_reply_with_usage_counts(server):
    final = run(backend(server, "good"))
    assert final.text == "".join(WORDS)
    assert final.metrics.new_tokens == len(WORDS)
    assert final.metrics.prompt_tokens == 9
    assert final.metrics.ttft_s is not None and final.metrics.ttft_s <= final.metrics.elapsed_s
    sent = server.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.0 and sent["max_tokens"] == 32
    assert sent["messages"] == MESSAGES


def test_usage_block_is_the_token_count(server):
    final = run(backend(server, "usage-differs"))
    assert final.text == "".join(WORDS[:2])
    assert final.metrics.new_tokens == 5  # the server's count, not the 2 chunks


def test_without_usage_counts_chunks(server):
    final = run(backend(server, "no-usage"))
    assert final.metrics.new_tokens == len(WORDS)
    assert final.metrics.prompt_tokens is None


def test_sampling_settings_and_seed_are_sent(server):
    run(backend(server, "good"), GenerationParams(max_new_tokens=7, temperature=0.5, top_p=0.8, seed=11, repetition_penalty=1.2))
    sent = server.requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"]) == (0.5, 0.8, 11, 7)
    assert sent["repetition_penalty"] == sent["repeat_penalty"] == 1.2
    assert sent["top_k"] == 0 and sent["min_p"] == 0.0  # a llama.cpp server's own defaults must not apply


def test_server_rejecting_sampling_extensions_is_asked_again_without(server):
    final = run(backend(server, "strict"))
    assert final.text == "".join(WORDS)
    assert "top_k" not in server.requests[-1] and server.requests[-1]["stream_options"]
    assert final.metrics.new_tokens == len(WORDS)


def test_server_rejecting_stream_options_is_asked_again_without(server):
    final = run(backend(server, "old-server"))
    assert final.text == "".join(WORDS)
    assert "stream_options" not in server.requests[-1]


def test_model_name_taken_from_server_when_not_given(server):
    b = OpenAIBackend(ModelSpec(name="u", source=server.url + "/v1", backend="openai", timeout_s=5))
    assert run(b).text == "".join(WORDS)
    assert server.requests[-1]["model"] == "only-model"


def test_api_key_from_env(server, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sekrit")
    assert run(backend(server, "needs-key", api_key_env="FAKE_KEY")).text == "".join(WORDS)
    monkeypatch.setenv("FAKE_KEY", "wrong")
    with pytest.raises(UserError, match="401.*FAKE_KEY"):
        run(backend(server, "needs-key", api_key_env="FAKE_KEY"))
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(UserError, match="FAKE_KEY.*not set"):
        backend(server, "needs-key", api_key_env="FAKE_KEY")


@pytest.mark.parametrize(
    "model, message",
    [
        ("needs-key", r"HTTP 401.*Incorrect API key"),
        ("no-such-model", r"404.*does not exist.*no-such-model"),
        ("malformed", r"malformed chunk"),
        ("cut", r"closed the connection mid-reply|closed the stream"),
        ("silent", r"sent nothing for 0.5 s"),
    ],
)
def test_fault_confined_to_its_pane(server, model, message):
    bad = backend(server, model, timeout_s=0.5)
    good = backend(server, "good")
    states = list(stream_pair(Job("a", bad, MESSAGES), Job("b", good, MESSAGES), GREEDY))
    final = states[-1]
    assert final.a.status == "error"
    assert final.a.error and __import__("re").search(message, final.a.error), final.a.error
    assert "\n" not in final.a.error and "Traceback" not in final.a.error
    assert final.b.status == "done" and final.b.text == "".join(WORDS)


def test_unreachable_server_is_a_user_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIBackend(ModelSpec(name="x", source=f"http://127.0.0.1:{port}", backend="openai", remote_model="m", timeout_s=2))
    with pytest.raises(UserError, match="cannot reach"):
        run(b)


def test_not_a_url_is_a_user_error():
    with pytest.raises(UserError, match="base URL"):
        OpenAIBackend(ModelSpec(name="x", source="/tmp/model", backend="openai"))


def test_stop_closes_the_http_stream(server):
    b = backend(server, "endless")
    stop = threading.Event()
    seen = 0
    for upd in stream_reply(b, MESSAGES, GenerationParams(max_new_tokens=MAX_NEW_TOKENS, greedy=True), stop):
        seen += 1
        if seen == 5:
            stop.set()
    assert upd.done and upd.finish_reason == "stopped"
    assert server.disconnected.wait(10), "the server never saw the client hang up"
    assert threading.active_count() < 50
    assert not [t for t in threading.enumerate() if t.name.startswith("openai-")]


def test_closing_the_iterator_ends_the_worker(server):
    b = backend(server, "endless")
    gen = b.stream(MESSAGES, GREEDY, threading.Event())
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("openai-")]


def test_stop_while_the_server_is_silent_ends_without_error(server):
    """A stop before the first byte cancels the wait (the 30 s read timeout never comes into play)."""
    b = backend(server, "silent", timeout_s=30)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    final = list(stream_reply(b, MESSAGES, GREEDY, stop))[-1]
    assert final.done and final.finish_reason == "stopped" and final.metrics.new_tokens == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("openai-")]
