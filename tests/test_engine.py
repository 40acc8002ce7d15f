"""The streaming engine: replies from a real (tiny, random) transformers model, and the pair's
bookkeeping (overlap, counters, failures, loads, stops) on scripted models (tests/scripted.py)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from llm_compare.backends.base import Backend, Chunk
from llm_compare.engine import Job, Status, stream_pair, stream_reply
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from scripted import WORDS, ScriptedBackend

GREEDY = GenerationParams(max_new_tokens=24, greedy=True)
ASK = [{"role": "user", "content": "Why is the sky blue?"}]


class Wrapping(Backend):
    """A test double around a real backend: same spec, context and prompt counting; `stream` varies."""

    def __init__(self, inner):
        self.inner, self.spec, self.context_length = inner, inner.spec, inner.context_length

    def count_prompt_tokens(self, messages):
        return self.inner.count_prompt_tokens(messages)


def generate_threads():
    return [t for t in threading.enumerate() if t.name.startswith("generate-")]


def plain_generate(backend, messages, max_new_tokens):
    ids = backend.chat_format.encode(messages)
    out = backend.model.generate(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=list(backend.chat_format.stop_token_ids),
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    return out[0, len(ids) :].tolist()


def test_chunks_join_to_plain_generate_text(tiny_backend):
    new_ids = plain_generate(tiny_backend, ASK, GREEDY.max_new_tokens)
    updates = list(stream_reply(tiny_backend, ASK, GREEDY))
    streamed = "".join(u.delta for u in updates)
    assert streamed == tiny_backend.tokenizer.decode(new_ids, skip_special_tokens=True)
    final = updates[-1]
    assert final.done and final.metrics.new_tokens == len(new_ids)
    assert final.finish_reason == ("length" if len(new_ids) == GREEDY.max_new_tokens else "stop")


def test_embedded_gguf_stream_matches_plain_generate(embedded_backend):
    new_ids = plain_generate(embedded_backend, ASK, 20)
    updates = list(stream_reply(embedded_backend, ASK, GREEDY.replace(max_new_tokens=20)))
    assert "".join(u.delta for u in updates) == embedded_backend.tokenizer.decode(new_ids, skip_special_tokens=True)
    assert "sky" in updates[-1].text.lower() or "light" in updates[-1].text.lower()  # a real model answering


def test_metrics_are_consistent(tiny_backend):
    updates = list(stream_reply(tiny_backend, ASK, GREEDY))
    m = updates[-1].metrics
    assert m.prompt_tokens == len(tiny_backend.chat_format.encode(ASK))
    assert 0 < m.ttft_s <= m.elapsed_s
    assert m.new_tokens == GREEDY.max_new_tokens
    assert m.tokens_per_s > 0
    # decode rate covers the tokens after the first over the time after the first
    assert m.tokens_per_s >= (m.new_tokens - 1) / m.elapsed_s
    assert m.peak_rss_bytes > 0
    counts = [u.metrics.new_tokens for u in updates]
    assert counts == sorted(counts)  # monotonic


def test_stop_ends_generation_within_one_token_and_thread_ends(tiny_backend):
    stop = threading.Event()
    params = GenerationParams(max_new_tokens=200, greedy=True)
    forwards = []  # one model call per new token; the worker may run ahead of the updates we see
    hook = tiny_backend.model.register_forward_pre_hook(lambda *_: forwards.append(None))
    seen_at_stop = started_at_stop = None
    try:
        for upd in stream_reply(tiny_backend, ASK, params, stop):
            if not upd.done and upd.metrics.new_tokens >= 3 and seen_at_stop is None:
                stop.set()
                started_at_stop = len(forwards)  # read after set: every token the worker had begun
                seen_at_stop = upd.metrics.new_tokens
    finally:
        hook.remove()
    assert upd.done and upd.finish_reason == "stopped"
    # at most one token begun after the stop (StopOnEvent is checked after every token); none lost
    assert 3 <= seen_at_stop <= upd.metrics.new_tokens <= started_at_stop + 1 < params.max_new_tokens
    assert upd.metrics.new_tokens == len(forwards)  # every token the model made was counted
    assert not generate_threads()


def test_stop_latency_is_one_token(tiny_backend):
    """StopOnEvent is checked after every token: a set event yields exactly one more token at most."""
    stop = threading.Event()
    stop.set()
    updates = list(stream_reply(tiny_backend, ASK, GenerationParams(max_new_tokens=50, greedy=True), stop))
    assert updates[-1].metrics.new_tokens <= 1
    assert updates[-1].finish_reason == "stopped"


def test_closing_the_iterator_stops_the_worker(tiny_backend):
    it = stream_reply(tiny_backend, ASK, GenerationParams(max_new_tokens=400, greedy=True))
    next(it)
    it.close()
    assert not generate_threads()


def test_seeded_sampling_is_reproducible_even_when_concurrent(tiny_backend):
    params = GenerationParams(max_new_tokens=20, temperature=1.0, top_p=0.95, seed=7)
    alone = list(stream_reply(tiny_backend, ASK, params))[-1].text
    final = list(stream_pair(Job("a", tiny_backend, ASK), Job("b", tiny_backend, ASK), params))[-1]
    assert final.a.text == final.b.text == alone
    other = list(stream_reply(tiny_backend, ASK, params.replace(seed=8)))[-1].text
    assert other != alone


def test_empty_prompt_and_context_overflow_are_refused(tiny_backend):
    with pytest.raises(UserError, match="empty"):
        list(stream_reply(tiny_backend, [{"role": "user", "content": "   "}], GREEDY))
    long = [{"role": "user", "content": "sky blue " * 400}]
    with pytest.raises(UserError, match=r"takes at most 256"):
        list(stream_reply(tiny_backend, long, GREEDY))


def test_max_new_tokens_is_capped_by_remaining_context(tiny_backend):
    msgs = [{"role": "user", "content": "sky " * 100}]
    n_prompt = tiny_backend.count_prompt_tokens(msgs)
    final = list(stream_reply(tiny_backend, msgs, GenerationParams(max_new_tokens=500, greedy=True)))[-1]
    assert final.metrics.new_tokens <= 256 - n_prompt


class Talkative(Wrapping):
    """Never ends a reply by itself: one token per chunk until the engine's limit."""

    def stream(self, messages, params, stop, threads=None):
        for _ in range(params.max_new_tokens):
            yield Chunk("x", 1)


def test_a_reply_cut_by_the_context_says_so(tiny_backend):
    """A reply that fills the model's context ends with "context", not "length": the user learns it
    was the context, not max new tokens, that cut it."""
    msgs = [{"role": "user", "content": "sky " * 100}]
    room = 256 - tiny_backend.count_prompt_tokens(msgs)
    talkative = Talkative(tiny_backend)
    full = list(stream_reply(talkative, msgs, GenerationParams(max_new_tokens=room + 50, greedy=True)))[-1]
    assert (full.finish_reason, full.metrics.new_tokens) == ("context", room)
    short = list(stream_reply(talkative, msgs, GenerationParams(max_new_tokens=room - 1, greedy=True)))[-1]
    assert (short.finish_reason, short.metrics.new_tokens) == ("length", room - 1)


def scripted_threads():
    return [t for t in threading.enumerate() if t.name.startswith("scripted-")]


def scripted(delays=0.005, **kwargs):
    return ScriptedBackend("scripted", WORDS * 40, delays, **kwargs)


def test_pair_concurrent_overlaps_and_sequential_does_not():
    params = GenerationParams(max_new_tokens=60, greedy=True)
    model = scripted()
    states = list(stream_pair(Job("a", model, ASK), Job("b", model, ASK), params))
    assert any(s.a.status == Status.RUNNING and s.b.status == Status.RUNNING and s.a.metrics.new_tokens
               and s.b.metrics.new_tokens for s in states)
    assert states[-1].a.status == states[-1].b.status == Status.DONE
    assert states[-1].a.text == states[-1].b.text == "".join((WORDS * 6)[:60])

    seq = list(stream_pair(Job("a", model, ASK), Job("b", model, ASK), params, sequential=True))
    assert not any(s.a.status == Status.RUNNING and s.b.status == Status.RUNNING for s in seq)
    assert any(s.a.status == Status.RUNNING and s.b.status == Status.WAITING for s in seq)
    assert seq[-1].b.started_at >= seq[-1].a.started_at + seq[-1].a.metrics.elapsed_s
    assert seq[-1].a.text == states[-1].a.text


def test_b_first_runs_b_first_and_keeps_each_side_in_its_pane():
    """The report alternates which model goes first; the panes (and what is stored) must not swap."""
    left, right = ScriptedBackend("left", "LLLL", 0.005), ScriptedBackend("right", "RRRR", 0.005)
    final = list(stream_pair(Job("a", left, ASK), Job("b", right, ASK), GREEDY, sequential=True, b_first=True))[-1]
    assert (final.a.side, final.a.text, final.b.side, final.b.text) == ("a", "LLLL", "b", "RRRR")
    assert final.b.started_at + final.b.metrics.elapsed_s <= final.a.started_at


def test_live_counter_ticks_while_a_side_waits_for_tokens():
    slow = ScriptedBackend("slow", WORDS, delays=[0.5, 0.0])  # a first token that comes late (a long prefill)
    states = list(stream_pair(Job("a", slow, ASK), Job("b", scripted(), ASK), GREEDY, tick_s=0.05))
    waiting_a = [s.a.metrics.elapsed_s for s in states if s.a.status == Status.RUNNING and s.a.metrics.new_tokens == 0]
    assert len(waiting_a) >= 3 and waiting_a == sorted(waiting_a) and waiting_a[-1] > waiting_a[0]


def test_a_side_that_raises_mid_stream_does_not_stop_the_other():
    params = GenerationParams(max_new_tokens=30, greedy=True)
    final = list(stream_pair(Job("a", scripted(fail_at=1), ASK, label="boom"), Job("b", scripted(), ASK), params))[-1]
    assert final.a.status == Status.ERROR and final.a.error == "boom failed: RuntimeError: scripted failure at token 1"
    assert final.a.text == WORDS[0]  # what streamed before the failure stays visible
    assert final.b.status == Status.DONE and final.b.metrics.new_tokens == 30
    assert not scripted_threads()


def test_a_side_that_could_not_load_leaves_the_other_usable():
    final = list(stream_pair(Job("a", None, ASK, error="model path /x does not exist"), Job("b", scripted(), ASK),
                             GREEDY))[-1]
    assert final.a.status == Status.ERROR and "/x" in final.a.error
    assert final.b.status == Status.DONE


def test_closing_a_pair_stops_both_workers():
    params = GenerationParams(max_new_tokens=400, greedy=True)
    model = scripted()
    it = stream_pair(Job("a", model, ASK), Job("b", model, ASK), params)
    for state in it:
        if state.a.metrics.new_tokens > 2 and state.b.metrics.new_tokens > 2:
            break
    it.close()
    deadline = time.monotonic() + 5
    while scripted_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not scripted_threads()


class CutCharacter(Wrapping):
    """Streams what a byte-level tokenizer decodes when max_new_tokens ends inside a Chinese character."""

    def stream(self, messages, params, stop, threads=None):
        from llm_compare.backends.base import Chunk

        yield Chunk("冬天", 2, time.perf_counter())
        yield Chunk("\ufffd", params.max_new_tokens - 2)


def test_a_character_cut_by_the_token_limit_is_not_kept(tiny_backend):
    final = list(stream_reply(CutCharacter(tiny_backend), ASK, GenerationParams(max_new_tokens=3, greedy=True)))[-1]
    assert final.finish_reason == "length" and final.text == "冬天"


def test_load_on_demand_loads_each_side_when_its_turn_comes():
    loads = []

    model = scripted()

    def loader(side):
        def load():
            loads.append((side, time.perf_counter()))
            return model
        return load

    jobs = [Job(s, None, ASK, load=loader(s)) for s in "ab"]
    states = list(stream_pair(*jobs, GREEDY, sequential=True))
    final = states[-1]
    assert final.a.status == final.b.status == Status.DONE and final.a.text == final.b.text
    assert [s for s, _ in loads] == ["a", "b"]
    assert loads[1][1] >= final.a.started_at + final.a.metrics.elapsed_s  # B loaded only after A finished
    assert final.a.model_wait_s is not None and final.b.model_wait_s is not None
    # at once: A loads in its own worker (its pane says so, its counter runs) while B answers
    loads.clear()
    states = list(stream_pair(Job("a", None, ASK, load=loader("a")), Job("b", model, ASK), GREEDY))
    assert [s for s, _ in loads] == ["a"] and states[-1].a.status == states[-1].b.status == Status.DONE
    assert states[-1].a.text == final.a.text


def test_a_load_shows_in_its_pane_as_it_happens():
    """What the loader reports (progress.status) reaches the side's state, with a running counter."""
    from llm_compare.progress import status

    model = scripted()

    def load():
        status("converting model.gguf, step 1/2")
        time.sleep(0.3)
        status("converting model.gguf, step 2/2")
        time.sleep(0.3)
        return model

    states = list(stream_pair(Job("a", None, ASK, load=load), Job("b", model, ASK), GREEDY, tick_s=0.05))
    loading = [s.a for s in states if s.a.status == Status.LOADING]
    assert [a.activity for a in loading if a.activity][:1] == ["converting model.gguf, step 1/2"]
    assert "converting model.gguf, step 2/2" in {a.activity for a in loading}
    elapsed = [a.metrics.elapsed_s for a in loading]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0.3  # the counter does not pretend nothing runs
    final = states[-1].a
    assert final.status == Status.DONE and final.activity == "" and final.model_wait_s >= 0.6


def test_load_on_demand_failure_and_stop_before_the_turn():
    model = scripted()

    def fails():
        raise UserError("Qwen-7B-Chat needs 15.6 GiB but 9.1 GiB is available")

    final = list(stream_pair(Job("a", model, ASK), Job("b", None, ASK, load=fails), GREEDY, sequential=True))[-1]
    assert final.a.status == Status.DONE and final.b.status == Status.ERROR and "15.6 GiB" in final.b.error

    called = []
    stop_b = threading.Event()
    stop_b.set()  # Stop B pressed while A was still answering
    final = list(stream_pair(Job("a", model, ASK), Job("b", None, ASK, stop=stop_b, load=lambda: called.append(1)),
                             GREEDY, sequential=True))[-1]
    assert final.b.status == Status.STOPPED and not called


def test_side_status_is_one_of_six_words_and_stores_as_the_word():
    import json

    from llm_compare.engine import SideState, Status

    assert [s.value for s in Status] == ["waiting", "loading", "running", "done", "stopped", "error"]
    assert [s.finished for s in Status] == [False, False, False, True, True, True]
    assert SideState("a", "A", status="stopped").status is Status.STOPPED  # read as its Status
    with pytest.raises(ValueError):
        SideState("a", "A", status="finished")  # a misspelt status is refused, not silently unfinished
    assert json.loads(json.dumps({"status": Status.DONE})) == {"status": "done"} and f"{Status.ERROR}" == "error"
