"""Thread policy: how many CPU threads a local stream may use.

Measured on 2 cores (see README "Threads"): one decode stream gains nothing from a second thread
on a small model, and two streams at once run best with one thread each. So a stream gets the
cores divided by the number of local streams running at once, at least one; `ModelSpec.threads`
(or `--threads-a/-b`) overrides it.
"""

from __future__ import annotations

import os


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for_stream(spec, concurrent_streams: int) -> int:
    if getattr(spec, "threads", None):
        return int(spec.threads)
    return max(1, cpu_cores() // max(1, concurrent_streams))
