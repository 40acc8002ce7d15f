"""Two users at once through the real app (`--concurrency 2`): one account of running streams.

Both panes of both sessions run SmolLM2 fp32, so all four streams share one backend from the pool.
The first session asks for a long sampled reply; once both its panes stream, a second session
sends a short turn. What the app returns (each pane's stats line) must show that the second pair
started while the first ran (4 local streams running) and that every stream runs with its fair
share of this machine's cores (the injected measurement makes every core the best a lone stream
can have, so each of n streams gets cores // n, at least 1). The
count shown is read inside each generating thread, so a caller setting thread state on the shared
backend would show there; a per-session account would show 2 streams for the second pair.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import quiet_machine, start_app

MODEL = "smollm2-fp32"
STATS = re.compile(r"(\d+) new tokens .* · (\d+) threads? \((\d+) streams? on this CPU\)")
WAIT_S = 600  # a guard against a hang, not a timing assertion


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, embedded_backend):
    work = tmp_path_factory.mktemp("concurrency-app")
    with pytest.MonkeyPatch.context() as mp:  # the app finds this machine's thread figure already measured:
        quiet_machine(mp)  # an injected one, so a busy machine (which would not cache a probe) passes too
        embedded_backend.thread_probe(False, lambda n: 0.01 / n)
    with start_app(["--model-a", MODEL, "--model-b", MODEL, "--concurrency", "2", "--no-votes"], work) as url:
        yield url


def client(url: str):
    """A new client is a new browser session (its own Conversation)."""
    from gradio_client import Client

    return Client(url, verbose=False)


def pane_stats(outputs) -> list[tuple[int, int, int]]:
    """(new tokens, threads, streams running) from both panes' stats lines (/compare outputs 7 and 8)."""
    found = [STATS.search(line) for line in outputs[6:8]]
    return [tuple(int(g) for g in m.groups()) if m else None for m in found]


def measured_best(backend) -> int:
    """The app's thread measurement for this model, from the per-machine cache it shares (the app
    process never runs llama.cpp, so it used the measurement made without it)."""
    def not_measured(n_threads):
        pytest.fail("this model's threads were not in the shared cache")

    return backend.thread_probe(False, not_measured)["best"]


def test_two_sessions_at_once_take_their_threads_from_the_shared_account(app_url, embedded_backend):
    import os

    from llm_compare.specs import load_registry

    spec = load_registry().resolve(MODEL, "a")
    assert (spec.source, spec.dtype) == (embedded_backend.spec.source, embedded_backend.spec.dtype)
    short = dict(system="", max_new_tokens=8, greedy=True, recommended=False, api_name="/compare")
    client(app_url).predict("Hi.", **short)  # the model is loaded and measured before the sessions overlap

    first = client(app_url).submit("Write a very long story about a dragon and a city.", system="",
                                   max_new_tokens=2048, greedy=False, temperature=1.0, seed=1,
                                   recommended=False, api_name="/compare")
    deadline = time.monotonic() + WAIT_S
    while not (first.outputs() and all(s and s[0] > 0 for s in pane_stats(first.outputs()[-1]))):
        assert not first.done(), f"the first turn ended before both panes streamed: {first.outputs()[-1:]}"
        assert time.monotonic() < deadline, "the first turn never streamed"
        time.sleep(0.2)
    second = client(app_url).predict("Name a colour.", **short)
    first_now = first.outputs()[-1]  # the first pair's stats while (or just after) the second ran
    first.cancel()

    assert all("done" in timer for timer in second[4:6])
    first_stats, second_stats = pane_stats(first_now), pane_stats(second)
    assert [s[2] for s in first_stats] == [2, 2]  # the first pair alone
    assert [s[2] for s in second_stats] == [4, 4]  # the second pair saw the first still streaming
    cores = len(os.sched_getaffinity(0))  # the cores this process (and the app it started) may use
    assert measured_best(embedded_backend) == cores  # 0.01 / n seconds a token: more threads, faster
    for (_, threads, running) in first_stats + second_stats:
        assert threads == max(1, cores // running)
