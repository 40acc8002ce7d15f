"""Prefix reuse and saved conversation caches on every local backend (backends/kv_states.py).

Each backend runs a scripted chat with reuse on: turns, Regenerate, a stopped answer continued, an
edit in the middle, and two conversations interleaved on one instance. Every reply must be
token-identical to the same backend answering the same messages with reuse off, and each turn must
evaluate only the ids after what the cache already held: counted independently of what the
backend reports, at the model (transformers forward calls, llama.cpp decode batches).
"""

from __future__ import annotations

import threading

import pytest

from gguf_helpers import GLM, QWEN
from llm_compare.backends import open_backend
from llm_compare.backends.kv_states import SavedCaches
from llm_compare.backends.llamacpp_eval import common_prefix
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

pytest.importorskip("llama_cpp")
GREEDY = GenerationParams(max_new_tokens=10, greedy=True)
KINDS = ["tiny-float32", "tiny-gguf-f32", "smollm2-llamacpp", "glm-float32", "glm-gguf-f32", "qwen-float32",
         "qwen-gguf-f32"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def spec_of(kind: str, tiny_model_dir) -> ModelSpec:
    if kind == "smollm2-llamacpp":
        return ModelSpec(name=kind, source="embedded:smollm2", backend="llamacpp", threads=1)
    name, dtype = kind.split("-", 1)
    directory = {"tiny": tiny_model_dir, "glm": GLM, "qwen": QWEN}[name]
    if name != "tiny" and not directory.is_dir():
        pytest.skip("legacy fixtures not present")
    return ModelSpec(name=kind, source=str(directory), dtype=dtype, threads=1)


@pytest.fixture(scope="module", params=KINDS)
def backend(request, tiny_model_dir):
    b = open_backend(spec_of(request.param, tiny_model_dir))
    yield b
    b.close()


class Evaluated:
    """Prompt ids each reply evaluated, counted at the model: the first forward pass of a transformers
    reply, or the ids llama.cpp decodes at positions inside the prompt."""

    def __init__(self, backend):
        self.backend, self.counts, self._undo = backend, [], []
        backend.best_threads()  # its one-time measurements run forward passes of their own: not counted
        backend.draft_probe()
        if hasattr(backend, "model"):
            def count(_module, _args, kwargs):
                ids = kwargs.get("input_ids")
                if ids is not None and self.pending:
                    self.counts[-1] += ids.shape[-1]
                    self.pending = False  # the first pass is the prompt's; later ones decode one token

            handle = backend.model.register_forward_pre_hook(count, with_kwargs=True)
            self._undo.append(handle.remove)
        else:
            for llm in list(backend._idle.queue):
                self._wrap(llm)

    def _wrap(self, llm):
        decode = llm._ctx.decode

        def counted(batch):  # prompt ids are those at positions before the prompt's end
            self.counts[-1] += sum(batch.batch.pos[i] < self.prompt_len for i in range(batch.batch.n_tokens))
            return decode(batch)

        llm._ctx.decode = counted
        self._undo.append(lambda: setattr(llm._ctx, "decode", decode))

    def reply(self, messages, params=GREEDY, stop_after: int | None = None):
        """The finished reply (engine update); `stop_after`: press Stop once that many tokens streamed."""
        self.counts.append(0)
        self.pending, self.prompt_len = True, len(encode(self.backend, messages))
        stop = threading.Event()
        last = None
        for update in stream_reply(self.backend, messages, params, stop):
            if stop_after is not None and update.metrics.new_tokens >= stop_after:
                stop.set()
            last = update
        return last

    def close(self):
        for undo in self._undo:
            undo()


def fresh_reply(backend, messages, params=GREEDY) -> str:
    backend.reuse = False
    try:
        return list(stream_reply(backend, messages, params))[-1].text
    finally:
        backend.reuse = True


def encode(backend, messages):
    """The prompt ids a reply is asked with: the format's, with earlier replies' generated ids spliced in."""
    return backend.prompt_ids(messages)


def format_ids(backend, messages):
    """The chat format's own ids: every reply re-encoded from its text."""
    return backend.prompt.encode(messages) if hasattr(backend, "prompt") else backend.chat_format.encode(messages)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_turns_regenerate_stop_and_edit_equal_fresh_replies_and_evaluate_only_new_ids(backend):
    backend.saved.clear()
    counter = Evaluated(backend)
    script = []  # (messages, reply update)
    try:
        m1 = [user("The sky is blue because")]
        script.append((m1, counter.reply(m1)))
        m2 = m1 + [assistant(script[-1][1].text), user("Write a short poem about the sea.")]
        script.append((m2, counter.reply(m2)))
        script.append((m2, counter.reply(m2)))  # Regenerate
        m3 = m2 + [assistant(script[-1][1].text), user("One, two, three, four")]
        script.append((m3, counter.reply(m3, GenerationParams(max_new_tokens=40, greedy=True), stop_after=3)))
        m4 = m3 + [assistant(script[-1][1].text), user("def add(a, b):")]  # the stopped answer continued
        script.append((m4, counter.reply(m4)))
        edited = [user("The sky is green because")] + m4[1:]  # an edit in the middle
        script.append((edited, counter.reply(edited)))
    finally:
        counter.close()
    assert script[3][1].finish_reason == "stopped"
    held: list[list[int]] = []  # what some cache may hold: each earlier prompt
    for (messages, update), evaluated in zip(script, counter.counts):
        ids = encode(backend, messages)
        best = max((common_prefix(h, ids) for h in held), default=0)
        reused = update.metrics.reused_tokens
        assert (update.metrics.prompt_tokens, evaluated) == (len(ids), len(ids) - reused)
        assert reused >= min(best, len(ids) - 1)  # at least every earlier prompt's shared part
        held.append(ids)
    # not re-read: the previous prompt and reply at the next turn (its generated ids, whatever its
    # text re-encodes to: reply_ids.py), all but one id at Regenerate
    for before, after in ((0, 1), (3, 4)):
        replied = len(encode(backend, script[before][0])) + script[before][1].metrics.new_tokens - 1
        assert script[after][1].metrics.reused_tokens >= replied
    assert script[2][1].metrics.reused_tokens == len(encode(backend, script[2][0])) - 1
    # the edit invalidates everything after it
    assert script[5][1].metrics.reused_tokens < len(encode(backend, [user("The sky is green because")]))
    for messages, update in script:
        if update.finish_reason != "stopped":
            assert update.text == fresh_reply(backend, messages)


def test_two_conversations_interleaved_keep_their_caches(backend):
    backend.saved.clear()
    counter = Evaluated(backend)
    a1, b1 = [user("Write a short poem about the sea.")], [user("def add(a, b):")]
    try:
        ra1, rb1 = counter.reply(a1), counter.reply(b1)
        a2 = a1 + [assistant(ra1.text), user("One, two, three")]
        b2 = b1 + [assistant(rb1.text), user("The sky is blue because")]
        ra2, rb2 = counter.reply(a2), counter.reply(b2)
    finally:
        counter.close()
    assert backend.saved.held()  # the other conversation's cache waited there
    for previous, update, messages, evaluated in ((a1, ra2, a2, counter.counts[2]), (b1, rb2, b2, counter.counts[3])):
        assert update.metrics.reused_tokens >= len(encode(backend, previous))
        assert evaluated == len(encode(backend, messages)) - update.metrics.reused_tokens
        assert update.text == fresh_reply(backend, messages)


def test_no_budget_keeps_no_other_conversation(backend):
    """With a zero budget the second conversation's turn evicts the first's cache: its next turn
    reads its whole conversation again (the budget is what holds the states)."""
    budget = backend.saved.budget
    backend.saved.clear()
    backend.saved.budget = 0
    try:
        a1, b1 = [user("Write a short poem about the sea.")], [user("def add(a, b):")]
        ra1 = list(stream_reply(backend, a1, GREEDY))[-1]
        list(stream_reply(backend, b1, GREEDY))
        a2 = a1 + [assistant(ra1.text), user("One, two, three")]
        ra2 = list(stream_reply(backend, a2, GREEDY))[-1]
        assert ra2.metrics.reused_tokens < len(encode(backend, a1))
        assert not backend.saved.held()
    finally:
        backend.saved.budget = budget


def test_saved_caches_take_the_longest_prefix_and_drop_the_least_recently_used():
    caches = SavedCaches(budget=100)
    assert caches.put([1, 2, 3], "a", 40) and caches.put([1, 2, 9, 9], "b", 40)
    assert caches.take([1, 2, 9, 5])[0].state == "b"
    assert caches.put([1, 2, 9, 9], "b", 40)
    assert caches.put([7], "c", 40)  # over budget: "a", the least recently used, goes
    assert caches.held() == [4, 1] and caches.used == 80
    assert caches.take([5, 6]) == (None, 0)
    assert not caches.put([8], "d", 101)  # larger than the whole budget
    entry, n = caches.take([1, 2, 9, 9, 4])
    assert (entry.state, n) == ("b", 4) and caches.held() == [1]
    e = list(range(40))
    assert caches.put(e, "e", 10)
    entry, n = caches.take([0, 1, 7])  # another conversation sharing two ids: "e" stays saved
    assert (entry.state, n) == ("e", 2) and caches.held() == [1, 40]
    entry, n = caches.take(e[:30])  # Regenerate at an earlier point of this conversation: taken
    assert (entry.state, n) == ("e", 30) and caches.held() == [1]


def test_reply_ids_are_spliced_only_after_their_own_prompt_and_for_their_own_text(tiny_backend):
    """backends/reply_ids.py: a reply's generated ids replace its re-encoded text in the next prompt,
    and nothing is spliced where the conversation before it or the reply's text was edited."""
    b = tiny_backend
    m1 = [user("The sky is blue because")]
    p1 = b.prompt_ids(m1)
    generated = [i for ch in "Hello there" for i in b.text_ids(ch)]  # one id per character
    text = b.tokenizer.decode(generated)
    assert generated != b.text_ids(text)  # its re-encoding differs: what the splice is for
    b.replies.remember(text, p1, generated + list(b.chat_format.stop_token_ids[:1]), b.chat_format.stop_token_ids)
    try:
        m2 = m1 + [assistant(text), user("Write a short poem about the sea.")]
        ids, plain = b.prompt_ids(m2), format_ids(b, m2)
        assert ids[: len(p1) + len(generated)] == p1 + generated
        tail = len(plain) - len(p1) - len(b.text_ids(text))
        assert ids[len(p1) + len(generated) :] == plain[-tail:]  # the template's end of turn and the new message
        edited_before = [user("The sky is green because")] + m2[1:]
        edited_reply = m1 + [assistant(text + "!"), m2[2]]
        for messages in (edited_before, edited_reply):
            assert b.prompt_ids(messages) == format_ids(b, messages)
    finally:
        b.replies = type(b.replies)()
