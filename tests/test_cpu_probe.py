"""The CPU probe: defaults chosen by measuring on this machine, cached, and overridable."""

from __future__ import annotations

import json
import os

import pytest

from llm_compare import cpu_probe

from conftest import quiet_machine


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    monkeypatch.delenv(cpu_probe.DTYPE_ENV, raising=False)
    return tmp_path


def test_turn_costs_are_measured_once_per_machine_and_width(cache, monkeypatch):
    quiet_machine(monkeypatch)  # a busy machine would rightly not cache it
    first = cpu_probe.dtype_costs(64, 128)  # a real measurement, tiny width: milliseconds
    assert set(first) == set(cpu_probe.CANDIDATES)
    for c in first.values():  # the turn the precision is chosen for: a prompt, then 200 new tokens
        assert c["turn_s"] == pytest.approx(c["prefill_s"] + 200 * c["decode_s"])
    monkeypatch.setattr(cpu_probe, "measure_turn_costs", lambda *a: pytest.fail("measured again"))
    assert cpu_probe.dtype_costs(64, 128) == first  # from <cache>/probes/dtype.json
    assert len(json.loads((cache / "probes" / "dtype.json").read_text())) == 1


def test_model_width_is_the_sources_widths_or_the_default():
    """The widths themselves are checked against tensor shapes in test_arch (source_widths)."""
    assert cpu_probe.model_width("embedded:smollm2") == (576, 1536)  # SmolLM2-135M's published widths
    assert cpu_probe.model_width("/no/such/model") == cpu_probe.DEFAULT_WIDTH


def test_thread_count_is_the_fastest_measured_and_cached(cache, monkeypatch):
    monkeypatch.setattr(cpu_probe, "cpu_cores", lambda: 4)
    calls = []

    def seconds_per_token(n):
        calls.append(n)
        return {1: 0.010, 4: 0.030}[n]  # e.g. a small llama.cpp model on a CPU where syncing costs

    found = cpu_probe.best_threads("llamacpp", 100 << 20, seconds_per_token)
    assert found["best"] == 1 and sorted(set(calls)) == [1, 4]
    calls.clear()
    assert cpu_probe.best_threads("llamacpp", 110 << 20, seconds_per_token)["best"] == 1  # same size bucket
    assert not calls
    cpu_probe.best_threads("llamacpp", 4 << 30, lambda n: {1: 0.4, 4: 0.2}[n])
    assert cpu_probe.best_threads("llamacpp", 4 << 30, seconds_per_token)["best"] == 4  # its own bucket


def test_matvec_is_used_only_where_measured_faster_and_bitwise_equal(cache, monkeypatch):
    monkeypatch.setattr(cpu_probe, "measure_matvec", lambda o, i: {"use_mv": (o, i) == (32, 16)})
    assert cpu_probe.matvec_pays(32, 16) and not cpu_probe.matvec_pays(16, 32)


@pytest.mark.parametrize("mv_s, linear_s, pays", [(1.0, 2.0, True), (0.85, 1.0, False), (2.0, 1.0, False)])
def test_matvec_is_picked_only_when_bitwise_equal_and_clearly_faster(monkeypatch, mv_s, linear_s, pays):
    """Timings scripted (mv first, then F.linear): faster by more than 20 % pays; the equality is
    checked here on the weights and inputs the measurement builds (seed 0), independently of it."""
    import torch
    import torch.nn.functional as F

    times = iter([mv_s, linear_s])
    monkeypatch.setattr(cpu_probe, "_timed", lambda fn, **kw: next(times))
    found = cpu_probe.measure_matvec(160, 96)
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(160, 96, generator=gen) * 0.02).bfloat16()
    xs = [torch.randn(96, generator=gen).bfloat16() for _ in range(cpu_probe.MATVEC_INPUTS)]
    equal = all(torch.equal(torch.mv(w, x), F.linear(x[None], w)[0]) for x in xs)
    assert found == {"mv_s": mv_s, "linear_s": linear_s, "bitwise_equal": equal, "use_mv": pays and equal}


def test_matvec_called_bitwise_equal_holds_on_other_inputs():
    """At SmolLM2's down projection (1536 -> 576) mv and F.linear sum differently on some CPUs (a Zen 4:
    1 input in ~15 differs): where the probe calls them equal, 40 inputs it never saw agree too."""
    import torch
    import torch.nn.functional as F

    found = cpu_probe.measure_matvec(576, 1536)
    gen = torch.Generator().manual_seed(1)
    w = (torch.randn(576, 1536, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16()
    with torch.inference_mode():
        unequal = sum(not torch.equal(torch.mv(w, x), F.linear(x[None], w)[0])
                      for x in (torch.randn(1536, generator=gen).bfloat16() for _ in range(40)))
    assert not found["bitwise_equal"] or unequal == 0


def test_a_probe_measured_while_other_processes_load_the_cpu_is_not_kept(tmp_path, monkeypatch):
    """A measurement beside a busy CPU (a build, a test run) would fix a wrong default for good:
    it is used by this process but not written, and a quiet one is written."""
    import json
    import subprocess
    import sys
    import time

    from llm_compare import machine

    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    monkeypatch.setattr(machine, "_UNCACHED", {})
    calls = []

    def measure():
        calls.append(1)
        time.sleep(1.0)
        return len(calls)

    spin = [sys.executable, "-c", "while True: pass"]
    burners = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        assert machine.cached_probe("demo", "busy", measure) == 1
        assert machine.cached_probe("demo", "busy", measure) == 1 and len(calls) == 1  # kept for this process
    finally:
        for b in burners:
            b.kill()
            b.wait()
    stored = tmp_path / "probes" / "demo.json"
    assert not stored.exists() or "busy" not in json.loads(stored.read_text())
    quiet_machine(monkeypatch)  # a quiet reading is injected: this machine may be busy with other work
    assert machine.cached_probe("demo", "quiet", measure) == 2
    assert json.loads(stored.read_text()) == {"quiet": 2}


def test_probes_measure_one_at_a_time_and_once_per_key(cache, monkeypatch):
    """Both panes may load at once: their probes never overlap (each would see half the CPU), a
    second ask for a key being measured waits for that measurement instead of making another, and
    a probe that needs another inside its measurement (a GGUF probe opening llama.cpp) goes on."""
    import threading
    import time

    from llm_compare import machine

    quiet_machine(monkeypatch)
    running, overlaps, calls = [], [], []

    def measure(value):
        def run():
            calls.append(value)
            running.append(value)
            overlaps.append(len(running) > 1)
            time.sleep(0.2)
            running.remove(value)
            return value
        return run

    def nested():
        return {"outer": machine.cached_probe("demo-inner", "k", measure("inner"))}

    threads = [threading.Thread(target=machine.cached_probe, args=("demo", key, measure(key)))
               for key in ("a", "b", "a")]
    threads.append(threading.Thread(target=machine.cached_probe, args=("demo-outer", "k", nested)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a probe waited for ever"
    assert overlaps and not any(overlaps)  # one at a time
    assert sorted(calls) == ["a", "b", "inner"]  # "a" measured once though asked twice at once
    assert machine.probe_results("demo") == {"a": "a", "b": "b"}
    assert machine.probe_results("demo-outer") == {"k": {"outer": "inner"}}
    assert machine.probe_results("never-measured") == {}
