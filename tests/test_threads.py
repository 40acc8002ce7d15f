"""Thread policy, and the torch threading semantics the transformers backend relies on."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
import torch

from llm_compare.specs import ModelSpec
from llm_compare.threads import STREAMS, StreamAccount, cpu_cores, threads_for_stream, use_torch_threads

SPEC = ModelSpec(name="m", source="x")


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr("llm_compare.threads.cpu_cores", lambda: 8)
    monkeypatch.delenv("LLM_COMPARE_THREADS", raising=False)


def test_cores_are_shared_between_the_streams_running_now(eight_cores):
    assert [threads_for_stream(SPEC, n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]


def test_a_lone_stream_gets_what_was_measured_best_never_more_than_its_share(eight_cores):
    assert threads_for_stream(SPEC, 1, best=1) == 1  # e.g. a small llama.cpp model on some CPUs
    assert threads_for_stream(SPEC, 1, best=6) == 6
    assert threads_for_stream(SPEC, 4, best=6) == 2


def test_spec_threads_and_the_environment_override_the_policy(eight_cores, monkeypatch):
    spec = ModelSpec(name="m", source="x", threads=3)
    assert threads_for_stream(spec, 2, best=1) == 3
    monkeypatch.setenv("LLM_COMPARE_THREADS", "2")
    assert threads_for_stream(SPEC, 1) == 2 and threads_for_stream(SPEC, 8) == 1
    assert threads_for_stream(spec, 1) == 3  # one model's own setting still wins


def test_the_account_counts_seats_until_released_once():
    account = StreamAccount()
    pair = account.take(2)
    assert account.running == 2
    solo = account.take(1)[0]
    assert account.running == 3
    pair[0].release()
    pair[0].release()  # idempotent: a side's seat is released by the reply and by its worker
    assert account.running == 2
    solo.release(), pair[1].release()
    assert account.running == 0


def test_engine_streams_take_and_return_seats(eight_cores):
    """Every local stream goes through the one account: it counts while streaming, not after, and
    the stream runs with the threads the account gives it (a scripted model measured best at 3)."""
    from llm_compare.engine import stream_reply
    from llm_compare.params import GenerationParams
    from scripted import ScriptedBackend

    model = ScriptedBackend("m", best_threads=3)
    before = STREAMS.running
    assert before <= 1  # nothing else streams now (a leaked seat would show here)
    seen = []
    for update in stream_reply(model, [{"role": "user", "content": "hi"}],
                               GenerationParams(max_new_tokens=3, greedy=True)):
        seen.append((STREAMS.running, update.metrics.threads))
    assert STREAMS.running == before
    assert all(running == before + 1 for running, _ in seen)
    assert {threads for _, threads in seen} == {3}  # its best, within its share of 8 cores (8 or 4)
    assert [threads for _, _, threads in model.calls] == [3]


def test_cpu_cores_are_the_cores_this_process_may_use():
    """As coreutils' `nproc` counts them (it honours CPU affinity, e.g. `taskset` or a container)."""
    nproc = shutil.which("nproc")
    if nproc is None:
        pytest.skip("no nproc")
    assert cpu_cores() == int(subprocess.run([nproc], capture_output=True, text=True, check=True).stdout)


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2 intra-op threads to tell settings apart")
def test_each_worker_keeps_its_own_torch_thread_count():
    """Two generate() workers at once, one with 1 thread and one with 2, each keep their own count
    through their first parallel op (a plain `torch.set_num_threads` at thread start does not:
    torch's lazy per-thread init overwrites it with whatever another thread set last)."""
    before = torch.get_num_threads()
    barrier = threading.Barrier(2)
    seen = {}

    def worker(n):
        use_torch_threads(n)
        barrier.wait()  # both have set their count before either runs an op
        torch.ones(256, 256) @ torch.ones(256, 256)
        torch.ones(1 << 16).sum()
        seen[n] = torch.get_num_threads()

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {1: 1, 2: 2}
        torch.set_num_threads(1)
        assert _in_thread(torch.get_num_threads) == 1  # a fresh thread starts from the last setting
    finally:
        torch.set_num_threads(before)
