"""Bench helpers: load specs once, time medians; every script prints ratios measured in one run."""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llm_compare.cli import quiet_libraries  # noqa: E402

quiet_libraries()

ASK = [{"role": "user", "content": "Write a detailed explanation of why the sky is blue, with examples."}]


def median(xs):
    return statistics.median(xs)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def header(title: str) -> None:
    import torch

    from llm_compare.machine import cpu_model

    print(f"# {title}")
    print(f"# CPU {cpu_model()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"cores {os.cpu_count()}, {time.strftime('%Y-%m-%d %H:%M')}")


def in_worker(fn):
    """Run `fn` in a fresh thread and return its result, as the engine runs generation.

    torch work in the main thread leaves an OpenMP team there that slows the next worker thread
    (measured: engine 17 vs 33 tok/s right after main-thread generate), so raw baselines run in a
    worker too.
    """
    import threading

    out = {}

    def work():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
