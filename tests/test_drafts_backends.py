"""Prompt-lookup drafts on the real backends: replies token-identical with and without drafts (greedy, and
sampled for a seed), drafts really accepted (so the test fails if drafting is silently off), and the count
of drafted tokens in the metrics. Cost figures are injected: whether drafting pays on this machine is
the probe's business (tests/test_drafts.py), not these tests'."""

from __future__ import annotations

import pytest

from gguf_helpers import GLM, QWEN
from llm_compare.backends import open_backend
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

CHEAP = {1: 1.0, 2: 1.02, 4: 1.05, 8: 1.1, 16: 1.2}  # verification about as cheap as a step: drafts pay
LINEAR = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 16.0}  # k tokens cost k steps: drafting cannot pay

REPEATING = [{"role": "user", "content": "Repeat after me: one, two, three, four, five. One, two, three, four, five."}]
legacy = pytest.mark.skipif(not GLM.is_dir(), reason="legacy fixtures not present")


def reply(backend, monkeypatch, params, drafts_on, costs=CHEAP, messages=REPEATING):
    with monkeypatch.context() as m:
        m.setattr(backend, "drafts", drafts_on)
        m.setattr(backend, "draft_costs", lambda: costs)
        *_, last = stream_reply(backend, messages, params)
    return last


def assert_identical_with_drafts(backend, monkeypatch, params, messages=REPEATING):
    plain = reply(backend, monkeypatch, params, False, messages=messages)
    drafted = reply(backend, monkeypatch, params, True, messages=messages)
    assert drafted.text == plain.text
    assert drafted.metrics.new_tokens == plain.metrics.new_tokens
    assert plain.metrics.draft_tokens == 0
    return drafted


def test_tiny_float32_greedy_identical_and_drafts_accepted(tiny_backend, monkeypatch):
    drafted = assert_identical_with_drafts(tiny_backend, monkeypatch, GenerationParams(max_new_tokens=80, greedy=True))
    assert drafted.metrics.draft_tokens > 0


def test_tiny_greedy_with_repetition_penalty_identical(tiny_backend, monkeypatch):
    params = GenerationParams(max_new_tokens=80, greedy=True, repetition_penalty=1.2)
    drafted = assert_identical_with_drafts(tiny_backend, monkeypatch, params)
    assert drafted.metrics.draft_tokens > 0


def test_tiny_seeded_sampling_identical_with_drafts(tiny_backend, monkeypatch):
    accepted = 0
    for seed in range(6):
        params = GenerationParams(max_new_tokens=60, temperature=0.05, top_p=0.9, seed=seed)
        accepted += assert_identical_with_drafts(tiny_backend, monkeypatch, params).metrics.draft_tokens
    assert accepted > 0


def test_no_drafts_where_verification_costs_as_much_as_steps(tiny_backend, monkeypatch):
    last = reply(tiny_backend, monkeypatch, GenerationParams(max_new_tokens=40, greedy=True), True, costs=LINEAR)
    assert last.metrics.draft_tokens == 0 and last.metrics.new_tokens == 40


def test_stop_ends_a_drafted_reply(tiny_backend, monkeypatch):
    import threading

    stop = threading.Event()
    with monkeypatch.context() as m:
        m.setattr(tiny_backend, "drafts", True)
        m.setattr(tiny_backend, "draft_costs", lambda: CHEAP)
        updates = stream_reply(tiny_backend, REPEATING, GenerationParams(max_new_tokens=200, greedy=True), stop)
        for update in updates:
            if update.metrics.new_tokens >= 5:
                stop.set()
        assert update.done and update.finish_reason == "stopped" and update.metrics.new_tokens < 200


@legacy
@pytest.mark.parametrize("directory", [GLM, QWEN], ids=["chatglm3", "qwen"])
def test_seed_fixtures_float32_greedy_identical(directory, monkeypatch):
    backend = open_backend(ModelSpec(name=directory.name, source=str(directory), dtype="float32"))
    try:
        drafted = assert_identical_with_drafts(backend, monkeypatch, GenerationParams(max_new_tokens=60, greedy=True))
        assert drafted.metrics.draft_tokens > 0
    finally:
        backend.close()


@pytest.mark.slow
def test_embedded_smollm2_float32_quoting_prompt_identical(embedded_backend, monkeypatch):
    """Real weights: a prompt whose answer quotes it, so drafts are right for real reasons."""
    quote = [{"role": "user", "content": "Repeat this sentence exactly: The quick brown fox jumps over the lazy "
                                         "dog while the farmer watches from the old wooden fence."}]
    drafted = assert_identical_with_drafts(embedded_backend, monkeypatch,
                                           GenerationParams(max_new_tokens=48, greedy=True), messages=quote)
    assert drafted.metrics.draft_tokens >= 5


def test_stats_line_and_ask_json_say_how_many_tokens_came_from_drafts(tiny_model_dir, monkeypatch, capsys):
    import json

    from llm_compare import drafts
    from llm_compare.cli import main
    from llm_compare.engine import Metrics, SideState
    from llm_compare.ui.session import format_stats

    monkeypatch.setattr(drafts, "verification_costs", lambda *a, **k: CHEAP)
    args = ["ask", REPEATING[0]["content"], "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
            "--dtype-a", "float32", "--dtype-b", "float32", "--greedy", "--max-new-tokens", "60", "--json"]
    runs = {}
    for setting in ("on", "off"):
        monkeypatch.setenv(drafts.DRAFTS_ENV, setting)
        assert main(args) == 0
        runs[setting] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert all(r["draft_tokens"] > 0 for r in runs["on"]) and all(r["draft_tokens"] == 0 for r in runs["off"])
    assert [r["text"] for r in runs["on"]] == [r["text"] for r in runs["off"]]
    state = SideState("a", "A", status="done", metrics=Metrics(new_tokens=60, draft_tokens=runs["on"][0]["draft_tokens"]))
    assert f"60 new tokens ({runs['on'][0]['draft_tokens']} from drafts)" in format_stats(state)
