"""Thread policy: how many CPU threads a local stream may use (torch and llama.cpp alike).

Measured on 2 cores (docs/backends.md "Threads"):
- A stream gets the cores divided by the local streams running at once, at least one: two
  streams on two cores run best with one thread each (1.6x one-after-another).
- A small model gets one thread even alone: its decode is bound by per-op dispatch, not memory,
  so a second thread only adds synchronisation (no gain on a quiet machine; llama.cpp 122 vs 109
  tok/s), and when other processes keep the cores busy, OpenMP's spinning threads wait for each
  other (transformers bf16: 13 tok/s with one thread, 0.7-1.3 with two, same run).
- Large models are memory-bandwidth bound, and one core cannot draw all the bandwidth, so they
  keep every core they are given.
`ModelSpec.threads` (or `--threads-a/-b`) overrides all of this.
"""

from __future__ import annotations

import os

SMALL_MODEL_BYTES = 1 << 30  # below this, decode is dispatch-bound: one thread per stream


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for_stream(spec, concurrent_streams: int, weight_bytes: int | None = None) -> int:
    """Threads for one stream of `spec` while `concurrent_streams` local streams run at once."""
    if getattr(spec, "threads", None):
        return int(spec.threads)
    if weight_bytes is not None and weight_bytes < SMALL_MODEL_BYTES:
        return 1
    return max(1, cpu_cores() // max(1, concurrent_streams))


def use_torch_threads(n: int) -> None:
    """Make this OS thread run torch ops with `n` intra-op threads, whatever other threads set.

    torch keeps the count per OS thread (OpenMP), but initialises a thread lazily on its first
    parallel op from the *process-wide* last `set_num_threads` value, overwriting a count set
    earlier in that thread. Two workers setting 1 and 2 then both ran with whichever was set
    last (tests/test_threads.py). Asking for the count first runs that initialisation now, so
    the `set_num_threads` after it sticks for this thread.
    """
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)
