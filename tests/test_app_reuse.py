"""Two sessions alternating on one app (`--concurrency 2`) each re-read only their new tokens.

Side A runs SmolLM2 fp32 on transformers, side B the same GGUF on llama.cpp, each one loaded
instance shared by both sessions. Session 1 asks, session 2 asks, then each continues its own
conversation: every second turn's stats line must say that at least the whole first-turn prompt
of that session was reused, although the other session ran on the same instance in between (its
cache had to wait in the saved-cache budget and come back).
"""

from __future__ import annotations

import re

import pytest

from conftest import start_app

REUSED = re.compile(r"first token [\d.]+ s \((\d+) of (\d+) prompt tokens reused\)")
TURN = dict(system="", max_new_tokens=8, greedy=True, recommended=False, api_name="/compare")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    work = tmp_path_factory.mktemp("reuse-app")
    args = ["--model-a", "smollm2-fp32", "--model-b", "smollm2-llamacpp", "--concurrency", "2", "--no-votes"]
    with start_app(args, work) as url:
        yield url


def reused(outputs) -> list[tuple[int, int] | None]:
    """(reused, prompt tokens) from both panes' stats lines (/compare outputs 7 and 8)."""
    found = [REUSED.search(line) for line in outputs[6:8]]
    return [tuple(int(g) for g in m.groups()) if m else None for m in found]


def test_two_alternating_sessions_each_evaluate_only_their_new_tokens(app_url, embedded_backend):
    from gradio_client import Client

    first_prompts = {1: "Name three colours.", 2: "Write a haiku about rain."}
    sessions = {n: Client(app_url, verbose=False) for n in (1, 2)}
    for n in (1, 2):
        sessions[n].predict(first_prompts[n], **TURN)
    for n in (1, 2):
        second = sessions[n].predict("And one more?", **TURN)
        first_prompt = len(embedded_backend.chat_format.encode([{"role": "user", "content": first_prompts[n]}]))
        for pane in reused(second):
            assert pane is not None, f"session {n}: a pane does not say what it reused: {second[6:8]}"
            n_reused, n_prompt = pane
            assert first_prompt <= n_reused < n_prompt  # all of its first turn's prompt; the new turn evaluated
