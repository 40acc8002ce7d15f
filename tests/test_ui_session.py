"""The UI's turn logic (no Gradio): streaming, history, stop, errors, battles and votes.

The panes run on scripted models (tests/scripted.py: known replies with known delays), so what is
checked is the session's bookkeeping; one test runs real models from the registry (the swap of
--one-model-at-a-time), and the app's browser tests run real ones end to end."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from llm_compare.engine import Status
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.specs import ModelSpec, load_registry
from llm_compare.store import VoteStore
from llm_compare.ui.session import AppContext, Conversation, run_turn, vote
from scripted import WORDS, ScriptedApp, ScriptedPool, scripted_registry, scripted_spec

PAIR = {"a": "alpha", "b": "beta"}
SHORT = GenerationParams(max_new_tokens=8, greedy=True)
LONG = GenerationParams(max_new_tokens=1500, greedy=False, temperature=1.0, seed=1)
SCRIPTS = {
    "alpha": dict(tokens=WORDS * 200, delays=0.01),  # a token every 10 ms: turns last long enough to stop
    "beta": dict(tokens=WORDS * 200, delays=0.01),
    "crashy": dict(tokens=WORDS, fail_at=2),  # a model raising mid-answer
    "mute": dict(tokens=[]),  # a model ending its reply before any text (EOS first)
}


@pytest.fixture
def ctx(tmp_path):
    missing = tmp_path / "missing.gguf"
    reg = scripted_registry(*(scripted_spec(name) for name in SCRIPTS))
    reg.models["broken"] = ModelSpec(name="broken", source=str(missing), label="Broken")
    return ScriptedApp(registry=reg, pool=ScriptedPool(SCRIPTS))


def last_reply(frame, side):
    return frame.chats[side][-1]["content"]


def test_turn_streams_both_sides_and_each_keeps_its_history(ctx):
    conv = Conversation()
    frames = list(run_turn(ctx, conv, "Name a colour.", PAIR, SHORT, tick_s=0.05))
    final = frames[-1]
    assert final.finished and len(frames) > 2
    for s in "ab":
        assert re.fullmatch(r"⏱ \d+\.\d s · done( · model load \d+\.\d s)?", final.times[s])
        assert re.search(rf"{SHORT.max_new_tokens} new tokens", final.stats[s])
        live = [float(re.search(r"([\d.]+) s", f.times[s]).group(1)) for f in frames if "running" in f.times[s]]
        assert live == sorted(live)  # the counter only moves forward while running
        reply = "".join(WORDS[:SHORT.max_new_tokens])
        assert last_reply(final, s) == reply + "\n\n*[reached max new tokens]*"
        assert conv.messages[s][-1] == {"role": "assistant", "content": reply}  # the note is not fed back
        assert [m["role"] for m in conv.messages[s]] == ["user", "assistant"]
    list(run_turn(ctx, conv, "And another one?", PAIR, SHORT, system="Answer briefly."))
    for s in "ab":
        sent, params, _ = ctx.pool.made[PAIR[s]].calls[-1]  # the model got its history and the system prompt
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"] and params == SHORT
        assert [m["content"] for m in conv.messages[s] if m["role"] == "user"] == ["Name a colour.", "And another one?"]
        assert len(conv.shown[s]) == 4


def test_empty_prompt_is_refused_before_anything_loads(ctx):
    conv = Conversation()
    with pytest.raises(UserError, match="empty"):
        next(run_turn(ctx, conv, "   ", {"a": "does-not-exist", "b": "does-not-exist"}, SHORT))
    assert conv.run is None


def test_prompt_over_the_context_limit_shows_in_both_panes(ctx):
    conv = Conversation()
    final = list(run_turn(ctx, conv, "word " * 9000, PAIR, SHORT))[-1]
    for s in "ab":
        assert final.state.side(s).status == Status.ERROR
        assert "takes at most" in last_reply(final, s) and "Error" in last_reply(final, s)
        assert conv.messages[s] == []  # a failed turn is not fed to the model next time


def test_a_model_that_cannot_load_leaves_the_other_side_usable(ctx):
    conv = Conversation()
    final = list(run_turn(ctx, conv, "Hi!", {"a": "broken", "b": "beta"}, SHORT))[-1]
    assert final.state.a.status == Status.ERROR and "missing.gguf" in final.state.a.error
    assert final.state.b.status == Status.DONE and final.state.b.text == "".join(WORDS[:SHORT.max_new_tokens])


def test_second_turn_while_one_runs_is_refused_and_closing_stops_both(ctx):
    conv = Conversation()
    turn = run_turn(ctx, conv, "Write a very long story about a dragon.", PAIR, LONG)
    for frame in turn:
        if all(frame.state and frame.state.side(s).metrics.new_tokens > 0 for s in "ab"):
            break
    with pytest.raises(UserError, match="already running"):
        next(run_turn(ctx, conv, "Another", PAIR, SHORT))
    turn.close()  # what Gradio's cancel does on Stop
    assert conv.run.finished.is_set()
    for s in "ab":
        st = conv.last_state.side(s)
        assert st.status == Status.STOPPED and 0 < st.metrics.new_tokens < LONG.max_new_tokens
        assert conv.messages[s][-1]["content"] == st.text  # the partial answer stays in the history


def test_stopping_one_side_lets_the_other_finish(ctx):
    conv = Conversation()
    params = GenerationParams(max_new_tokens=24, greedy=True)
    stopped = False
    for frame in run_turn(ctx, conv, "Count from one to fifty in words.", PAIR, params):
        if not stopped and frame.state.a.metrics.new_tokens > 0:
            conv.run.stop_side("a")
            stopped = True
    assert frame.state.a.status == Status.STOPPED and frame.state.a.metrics.new_tokens < 24
    assert frame.state.b.status == Status.DONE and frame.state.b.metrics.new_tokens == 24
    assert "[stopped]" in last_reply(frame, "a")


def test_a_model_raising_mid_stream_shows_its_error_and_the_other_finishes(ctx):
    conv = Conversation()
    params = GenerationParams(max_new_tokens=16, greedy=True)
    final = list(run_turn(ctx, conv, "Tell me about cats.", {"a": "crashy", "b": "beta"}, params))[-1]
    assert final.state.a.status == Status.ERROR and "scripted failure at token 2" in last_reply(final, "a")
    assert final.state.b.status == Status.DONE and final.state.b.metrics.new_tokens == 16


@pytest.fixture
def voting(ctx, tmp_path):
    store = VoteStore(tmp_path / "votes.db")
    yield dataclasses.replace(ctx, store=store)
    store.close()


def test_each_finished_turn_is_a_battle_that_takes_one_vote(voting):
    conv = Conversation()
    list(run_turn(voting, conv, "Name a colour.", {"a": "alpha", "b": "crashy"}, SHORT))
    assert conv.battle_id is None and conv.note.startswith("not stored")  # a side failed: nothing to vote on
    with pytest.raises(UserError, match="nothing to vote on"):
        vote(voting, conv, "a")
    list(run_turn(voting, conv, "Name a fruit.", PAIR, SHORT))
    first = conv.battle_id
    battle = voting.store.get_battle(first)
    assert battle.prompt == "Name a fruit." and not battle.anony and battle.vote is None
    assert battle.conversation_a[-1] == {"role": "assistant", "content": conv.messages["a"][-1]["content"]}
    vote(voting, conv, "b")
    assert voting.store.get_battle(first).vote == "b"
    with pytest.raises(UserError, match="already has your vote"):
        vote(voting, conv, "a")
    list(run_turn(voting, conv, "And a vegetable?", PAIR, SHORT))  # normal mode: the conversation goes on
    assert conv.battle_id == first + 1 and conv.can_vote and len(conv.messages["a"]) == 6  # A answered all 3
    assert voting.store.counts() == {"battles": 2, "votes": 1, "unvoted": 1}


def test_blind_turn_hides_names_until_the_vote_then_draws_a_new_pair(voting):
    conv = Conversation()
    pool = ["alpha", "crashy"]
    seen = []
    for frame in run_turn(voting, conv, "Say hi.", {"a": "broken", "b": "broken"}, SHORT, blind=True, blind_pool=pool):
        seen.append((frame.chats["a"][-1]["content"], frame.status))
    assert conv.labels == {"a": "Model A", "b": "Model B"} and set(conv.names.values()) == set(pool)
    assert not any(word in text or word in status for text, status in seen for word in ("Crashy", "Alpha"))
    conv2 = Conversation()
    pool = ["alpha", "beta"]
    list(run_turn(voting, conv2, "Say hi.", {}, SHORT, blind=True, blind_pool=pool))
    assert conv2.hidden and voting.store.get_battle(conv2.battle_id).anony
    assert {voting.store.get_battle(conv2.battle_id).model_a, voting.store.get_battle(conv2.battle_id).model_b} == set(pool)
    vote(voting, conv2, "a")
    assert not conv2.hidden and set(conv2.labels.values()) == {voting.registry.models[n].label for n in pool}
    list(run_turn(voting, conv2, "Next round.", {}, SHORT, blind=True, blind_pool=pool))
    assert conv2.hidden and len(conv2.messages["a"]) == 2  # a vote ends a blind conversation


def test_a_stopped_turn_returns_its_streams_seats(ctx):
    """Stop (closing the turn) mid-stream gives both sides' seats back to the process-wide account,
    or later streams would get fewer threads for ever (two sessions at once: test_app_concurrency)."""
    from llm_compare.threads import STREAMS

    before = STREAMS.running
    turn = run_turn(ctx, Conversation(), "Write a long story about a dragon.", PAIR, LONG, tick_s=0.05)
    for frame in turn:
        if all(frame.state.side(s).metrics.new_tokens > 0 for s in "ab"):
            break
    assert STREAMS.running == before + 2
    turn.close()
    assert STREAMS.running == before


def test_blind_mode_needs_two_models(voting):
    with pytest.raises(UserError, match="at least two"):
        next(run_turn(voting, Conversation(), "Hi", {}, SHORT, blind=True, blind_pool=["alpha"]))


def test_one_model_at_a_time_swaps_models_per_side():
    """--one-model-at-a-time: only one model is ever resident; each side loads when its turn comes."""
    reg = load_registry()
    ctx = AppContext(registry=reg, pool=ModelPool(max_resident=1), one_at_a_time=True)
    conv = Conversation()
    frames = list(run_turn(ctx, conv, "Name a colour.", {"a": "smollm2-bf16", "b": "smollm2-fp32"}, SHORT))
    final = frames[-1].state
    assert final.a.status == final.b.status == Status.DONE
    assert any("loading model" in f.times["b"] for f in frames)
    assert final.b.model_wait_s is not None and "model load" in frames[-1].times["b"]
    assert [b.spec.name for b in ctx.pool.loaded()] == ["smollm2-fp32"]  # A was swapped out for B
    assert ctx.pool.last_swap is not None and ctx.pool.last_swap.unloaded == ["SmolLM2-135M-Instruct · bf16"]


def test_an_empty_reply_is_an_answer_that_can_lose_a_vote(voting):
    conv = Conversation()
    frames = list(run_turn(voting, conv, "Name a colour.", {"a": "alpha", "b": "mute"}, SHORT))
    assert frames[-1].state.b.status == Status.DONE and frames[-1].state.b.text == ""
    assert "empty reply" in last_reply(frames[-1], "b")
    assert conv.battle_id is not None and conv.can_vote
    vote(voting, conv, "a")
    assert voting.store.get_battle(conv.battle_id).vote == "a"


def test_blind_draws_only_models_available_on_this_machine(tmp_path):
    """On the real registry, plus an entry whose file is absent."""
    reg = load_registry()
    reg.models["broken"] = ModelSpec(name="broken", source=str(tmp_path / "missing.gguf"), label="Broken")
    voting = AppContext(registry=reg, pool=ModelPool())
    names = voting.available_names()
    assert {"smollm2-fp32", "smollm2-bf16"} <= set(names)
    assert "broken" not in names  # a registry entry whose file is absent (made absent by this test)
    for name, spec in voting.registry.models.items():  # e.g. the seed models' /mnt/data paths
        if spec.source.startswith("/"):
            assert (name in names) == Path(spec.source).exists(), name
    for _ in range(8):
        conv = Conversation()
        conv.start(voting, {}, True, None)
        assert set(conv.names.values()) <= set(names)
