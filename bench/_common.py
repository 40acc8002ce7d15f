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

    print(f"# {title}")
    print(f"# torch {torch.__version__}, cores {os.cpu_count()}, {time.strftime('%Y-%m-%d %H:%M')}")
