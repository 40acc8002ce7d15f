"""This machine's memory read bandwidth, measured once and cached (the decode-speed ceiling's input).

Decoding one token reads every weight once, so tokens/s can never exceed bandwidth / bytes read
per token. The bandwidth is torch summing an array far bigger than any CPU cache (the better of
one thread and all cores), in a worker thread as the engine runs torch. bench/memory_bandwidth.py
uses the same measuring function.
"""

from __future__ import annotations

import statistics
import threading
import time

from llm_compare.machine import cached_probe, machine_key
from llm_compare.threads import cpu_cores, use_torch_threads

PROBE_MIB = 256  # beyond any L3 cache seen (EPYC: 32 MiB per CCD); ~0.1 s per pass
PROBE_RUNS = 5


def read_bandwidth(sum_fn, nbytes: int, runs: int) -> float:
    """Bytes per second of `sum_fn()` over an array of `nbytes`; median of `runs` after a warm-up."""
    sum_fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sum_fn()
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times)


def torch_sum_bandwidth(mib: int = PROBE_MIB, runs: int = PROBE_RUNS, threads: int | None = None) -> float:
    """Read bandwidth of a torch float32 sum with `threads` (default: all cores), in a fresh thread."""
    import torch

    out: dict = {}

    def work():
        try:
            use_torch_threads(threads or cpu_cores())
            t = torch.ones(mib * 1024 * 1024 // 4, dtype=torch.float32)
            out["value"] = read_bandwidth(t.sum, t.numel() * 4, runs)
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    worker = threading.Thread(target=work, name="bandwidth-probe")
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def memory_bandwidth() -> float:
    """Bytes/s, measured on the first call on this machine (CPU model, flags, torch version) and cached."""
    import torch

    def measure() -> float:  # the best of one thread and all: on a busy box OpenMP threads wait for each other
        return max(torch_sum_bandwidth(threads=n) for n in sorted({1, cpu_cores()}))

    key = machine_key(torch.__version__, f"cores={cpu_cores()}", f"{PROBE_MIB}MiB", "best of 1 and all threads")
    return float(cached_probe("memory_bandwidth", key, measure))
