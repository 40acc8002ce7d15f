"""A model served elsewhere in one pane, a local one in the other, through the app's API endpoint.

The "elsewhere" is real: llama-cpp-python's OpenAI-compatible server on 127.0.0.1 serving the
embedded GGUF (conftest.llama_server). The app is started with its URL as model A.
"""

from __future__ import annotations

import pytest

from conftest import start_app
from llm_compare.engine import SideState


@pytest.fixture(scope="module")
def remote_app(llama_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("remote-app")
    with start_app(["--model-a", llama_server + "/v1", "--model-b", "smollm2-fp32", "--no-votes"], work) as url:
        yield url


def text_of(message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


def own_reply(backend, params) -> str:
    """The pane text the same backend gives when asked directly, outside the app."""
    from llm_compare.engine import stream_reply
    from llm_compare.ui.session import pane_text

    final = list(stream_reply(backend, [{"role": "user", "content": QUESTION}], params))[-1]
    return pane_text(SideState(side="a", label="", text=final.text, status="done", finish_reason=final.finish_reason))


QUESTION = "What is the capital of France?"


def test_remote_server_pane_against_local_pane_through_the_api(remote_app, llama_server):
    from gradio_client import Client

    from llm_compare.backends.openai import OpenAIBackend
    from llm_compare.backends.transformers import TransformersBackend
    from llm_compare.loading import load_model
    from llm_compare.params import GenerationParams
    from llm_compare.specs import load_registry, spec_from_source
    from llm_compare.threads import cpu_cores

    client = Client(remote_app, verbose=False)
    result = client.predict(QUESTION, system="", max_new_tokens=12, greedy=True, api_name="/compare")
    chat_a, chat_b, head_a, head_b, time_a, time_b, stats_a, stats_b = result[:8]
    assert "127.0.0.1" in head_a and "fp32" in head_b
    for chat, timer, stats in ((chat_a, time_a, stats_a), (chat_b, time_b, stats_b)):
        assert "done" in timer and "Error" not in text_of(chat[-1])
        assert "tok/s" in stats and "first token –" not in stats
    # each pane holds what its model answers when asked directly (greedy: the same text)
    params = GenerationParams(max_new_tokens=12, greedy=True)
    assert text_of(chat_a[-1]) == own_reply(OpenAIBackend(spec_from_source(llama_server + "/v1")), params)
    local = load_registry().models["smollm2-fp32"]
    local = local.with_overrides(threads=max(1, cpu_cores() // 2))  # as the app runs two panes at once
    assert text_of(chat_b[-1]) == own_reply(TransformersBackend(local, load_model(local)), params)
