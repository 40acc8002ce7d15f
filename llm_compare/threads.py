"""Thread policy: how many CPU threads a local stream may use (torch and llama.cpp alike).

Measured on 2 quiet cores with the embedded SmolLM2-135M (`python bench/threads.py`, README "Threads"):
- Two streams at once run best with one thread each: transformers bf16 34.1 tok/s combined (1.37x
  one stream on one thread, evenness 0.99); two threads each oversubscribes (31.7).
- transformers alone uses every core: 33.8 tok/s with 2 threads vs 24.8 with 1. Memory bandwidth
  doubles with the second thread too (torch sum 27.1 vs 13.8 GB/s), so large models gain as well.
- llama.cpp with a small model gets one thread even alone: 113.7 tok/s with 1 thread, 29.0 with 2
  (its per-token synchronisation costs more than a 98 MB model's matmuls).
- Once a llama.cpp context exists in this process, torch's multi-threaded decode halves (bf16 34 -> 17
  tok/s with 2 threads; the OpenMP runtime is shared) while one thread keeps 24: torch streams then
  get one thread (`LLAMACPP_RAN`, set when the llama.cpp backend opens a model).
- Under load from other processes OpenMP's threads wait for each other: two torch threads then ran
  10x slower than one (docs/backends.md). Set `threads = 1` (or `--threads-a/-b 1`) on a busy box.
`ModelSpec.threads` (or `--threads-a/-b`) overrides all of this.
"""

from __future__ import annotations

import os
import threading

SMALL_MODEL_BYTES = 1 << 30  # llama.cpp below this: one thread per stream (measured above)
LLAMACPP_RAN = threading.Event()  # a process-wide fact about the OpenMP runtime, not app state


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for_stream(spec, concurrent_streams: int, weight_bytes: int | None = None) -> int:
    """Threads for one stream of `spec` while `concurrent_streams` local streams run at once."""
    if getattr(spec, "threads", None):
        return int(spec.threads)
    backend = getattr(spec, "backend", "transformers")
    small = weight_bytes is not None and weight_bytes < SMALL_MODEL_BYTES
    if small and backend == "llamacpp":
        return 1
    if backend == "transformers" and LLAMACPP_RAN.is_set():
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
