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


def test_remote_server_pane_against_local_pane_through_the_api(remote_app):
    from gradio_client import Client

    client = Client(remote_app, verbose=False)
    result = client.predict("What is the capital of France?", system="", max_new_tokens=12, greedy=True,
                            api_name="/compare")
    chat_a, chat_b, head_a, head_b, time_a, time_b, stats_a, stats_b = result[:8]
    assert "127.0.0.1" in head_a and "fp32" in head_b
    for chat, timer, stats in ((chat_a, time_a, stats_a), (chat_b, time_b, stats_b)):
        assert "done" in timer and "Error" not in text_of(chat[-1])
        assert "paris" in text_of(chat[-1]).lower()  # a real model answered on both sides
        assert "tok/s" in stats and "first token –" not in stats
