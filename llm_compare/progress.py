"""What slow one-time work is doing now (a model load, a GGUF conversion, an export), for whoever waits.

The engine loads a side's model in that side's worker thread inside `reporting(callback)`, and the
callback puts each line in that side's pane next to the elapsed time. Code deep in a loader calls
`status("converting … (one time)")` without knowing who listens: the pane, the CLI's progress line,
or nobody (then it is only logged). Per thread, because two sides load in two threads.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

log = logging.getLogger(__name__)
_listener = threading.local()


@contextmanager
def reporting(callback: Callable[[str], None]) -> Iterator[None]:
    """Send every `status()` line of this thread to `callback` while the block runs."""
    previous = getattr(_listener, "callback", None)
    _listener.callback = callback
    try:
        yield
    finally:
        _listener.callback = previous


def status(text: str) -> None:
    """Say what this thread's slow work is doing now (one short line)."""
    log.info("%s", text)
    callback = getattr(_listener, "callback", None)
    if callback is not None:
        callback(text)
