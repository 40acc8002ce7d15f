"""CPU sharing: how many threads each local stream gets, from one account of the streams running now.

Backends are shared by every pane and user of one process (the model pool), so a stream's thread
count is not state on a backend: the engine takes a seat in the process-wide `STREAMS` account for
every local stream it starts (a pair takes both seats before either starts), and each new stream's
count is derived from how many seats are taken at that moment:

    threads = min(what a lone stream of this model runs best with on this CPU,  # measured
                  cores // streams running now)                                 # shared fairly

The first term is measured, never assumed (`cpu_probe.best_threads`, cached per machine, model size
and backend): on one Intel box a small llama.cpp model ran 4x slower with 2 threads than with 1, on
an AMD box 2 threads ran 1.86x faster at 7B widths. `LLM_COMPARE_THREADS` caps every stream;
`ModelSpec.threads` (`--threads-a/-b`) sets one model's count outright.
"""

from __future__ import annotations

import os
import threading

LLAMACPP_RAN = threading.Event()  # a process-wide fact about the OpenMP runtime (cpu_probe keys on it)
THREADS_ENV = "LLM_COMPARE_THREADS"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Seat:
    """One running local stream in the account; `release()` (idempotent) when it ends."""

    def __init__(self, account: "StreamAccount"):
        self._account = account
        self._held = True

    def release(self) -> None:
        with self._account._lock:
            if self._held:
                self._held = False
                self._account._running -= 1


class StreamAccount:
    """How many local streams (panes, users, the batch report) run in this process now."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = 0

    def take(self, n: int = 1) -> list[Seat]:
        """Seats for `n` streams that start together (each sees the others when it counts)."""
        with self._lock:
            self._running += n
        return [Seat(self) for _ in range(n)]

    @property
    def running(self) -> int:
        return self._running


STREAMS = StreamAccount()  # the one account of this process


def runs_here(spec) -> bool:
    """Whether a model's streams use this machine's CPU (a remote server's do not: no seat, no threads)."""
    return spec.backend != "openai"


def env_cap() -> int | None:
    value = os.environ.get(THREADS_ENV, "").strip()
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        return None


def threads_for_stream(spec, running: int, best: int | None = None) -> int:
    """Threads for a new stream of `spec` while `running` local streams (itself included) run.

    `best`: the measured thread count a lone stream of this model runs fastest with (None: unknown,
    all cores)."""
    if getattr(spec, "threads", None):
        return int(spec.threads)
    cores = cpu_cores()
    share = max(1, cores // max(1, running))
    n = min(best or cores, share)
    cap = env_cap()
    return max(1, min(n, cap) if cap else n)


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
