"""A model served elsewhere in one pane, a local one in the other, through the app's API endpoint.

The "elsewhere" is real: llama-cpp-python's OpenAI-compatible server on 127.0.0.1 serving the
embedded GGUF (conftest.llama_server). The app is started with its URL as model A.
"""

from __future__ import annotations

import pytest

from conftest import start_app


@pytest.fixture(scope="module")
def remote_app(llama_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("remote-app")
    with start_app(["--model-a", llama_server + "/v1", "--model-b", "smollm2-fp32", "--no-votes"], work) as url:
        yield url


def text_of(message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


def ask_app(url: str, prompt: str) -> tuple:
    """One /compare call in a fresh session (a new client: no history from earlier calls)."""
    from gradio_client import Client

    return Client(url, verbose=False).predict(prompt, system="", max_new_tokens=12, greedy=True, api_name="/compare")


def test_remote_server_pane_against_local_pane_through_the_api(remote_app, llama_server):
    """Each pane's answer is compared with the same backend's own answer in this run, never with words
    a tiny model "should" know: the server asked directly, and the local model asked again."""
    from llm_compare.backends import open_backend
    from llm_compare.engine import stream_reply
    from llm_compare.params import GenerationParams
    from llm_compare.specs import spec_from_source

    prompt = "What is the capital of France?"
    chat_a, chat_b, head_a, head_b, time_a, time_b, stats_a, stats_b = ask_app(remote_app, prompt)[:8]
    assert "127.0.0.1" in head_a and "fp32" in head_b
    for chat, timer, stats in ((chat_a, time_a, stats_a), (chat_b, time_b, stats_b)):
        assert "done" in timer and "Error" not in text_of(chat[-1]) and text_of(chat[-1]).strip()
        assert "tok/s" in stats and "first token –" not in stats
    server = open_backend(spec_from_source(llama_server + "/v1"))
    direct = list(stream_reply(server, [{"role": "user", "content": prompt}],
                               GenerationParams(max_new_tokens=12, greedy=True)))[-1]
    assert direct.text and text_of(chat_a[-1]).startswith(direct.text)  # exactly what the server answers
    assert text_of(chat_a[-1]).endswith("*[reached max new tokens]*") == (direct.finish_reason == "length")
    again = ask_app(remote_app, prompt)
    assert text_of(again[1][-1]) == text_of(chat_b[-1])  # the local model, greedy: the same answer again
