"""Thread policy, and the torch threading semantics the transformers backend relies on."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
import torch

from llm_compare.specs import ModelSpec
from llm_compare.threads import SMALL_MODEL_BYTES, cpu_cores, threads_for_stream, use_torch_threads

SPEC = ModelSpec(name="m", source="x")
BIG = 4 * SMALL_MODEL_BYTES


@pytest.fixture(autouse=True)
def no_llamacpp_yet(monkeypatch):
    """The policy as in a process where llama.cpp never ran (other tests in this run may have)."""
    monkeypatch.setattr("llm_compare.threads.LLAMACPP_RAN", threading.Event())


def test_cores_are_shared_between_concurrent_streams(monkeypatch):
    monkeypatch.setattr("llm_compare.threads.cpu_cores", lambda: 8)
    assert threads_for_stream(SPEC, 1, BIG) == 8
    assert threads_for_stream(SPEC, 2, BIG) == 4
    assert threads_for_stream(SPEC, 3, BIG) == 2
    assert threads_for_stream(SPEC, 16, BIG) == 1
    assert threads_for_stream(SPEC, 1) == 8  # size unknown: all cores


def test_small_llamacpp_models_get_one_thread_transformers_all_cores(monkeypatch):
    monkeypatch.setattr("llm_compare.threads.cpu_cores", lambda: 8)
    llama = ModelSpec(name="m", source="x.gguf", backend="llamacpp")
    assert threads_for_stream(llama, 1, SMALL_MODEL_BYTES // 2) == 1
    assert threads_for_stream(llama, 1, BIG) == 8
    assert threads_for_stream(SPEC, 1, SMALL_MODEL_BYTES // 2) == 8
    assert threads_for_stream(SPEC, 2, SMALL_MODEL_BYTES // 2) == 4


def test_spec_threads_override_policy():
    spec = ModelSpec(name="m", source="x", threads=3)
    assert threads_for_stream(spec, 2, BIG) == 3
    assert threads_for_stream(spec, 1, 1) == 3


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


def test_torch_gets_one_thread_once_llamacpp_ran_in_the_process(monkeypatch):
    from llm_compare import threads

    monkeypatch.setattr("llm_compare.threads.cpu_cores", lambda: 8)
    assert threads.threads_for_stream(SPEC, 1, BIG) == 8
    threads.LLAMACPP_RAN.set()
    assert threads.threads_for_stream(SPEC, 1, BIG) == 1
    assert threads.threads_for_stream(ModelSpec(name="m", source="x.gguf", backend="llamacpp"), 1, BIG) == 8
