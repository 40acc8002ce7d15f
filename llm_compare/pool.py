"""`ModelPool`: loaded backends, shared by both sides and by every user of one app process.

Loads on demand, one load at a time (two concurrent loads would double peak memory), and
reuses a backend when both sides name the same configuration.

`ModelPool(max_resident=1)` is for machines where two models do not fit together: loading a model
first unloads the least recently used other one, and `last_swap` records what that cost, so the
UI can show it next to the timings. Use it with sequential (fair-timing) mode and call `get(spec)`
right before each side streams: a backend obtained earlier is closed when it is swapped out.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from dataclasses import dataclass

from llm_compare.backends import open_backend
from llm_compare.backends.base import Backend
from llm_compare.dtype_choice import resolve
from llm_compare.loading.memory import check_fits
from llm_compare.progress import status
from llm_compare.specs import ModelSpec

log = logging.getLogger(__name__)


def spec_key(spec: ModelSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True, default=str)


@dataclass
class Swap:
    """One load-on-demand swap: which models were unloaded to make room for `loaded`, and its cost."""

    unloaded: list[str]
    loaded: str
    unload_seconds: float
    load_seconds: float

    @property
    def seconds(self) -> float:
        return self.unload_seconds + self.load_seconds


class ModelPool:
    def __init__(self, max_resident: int | None = None):
        if max_resident is not None and max_resident < 1:
            raise ValueError("max_resident must be at least 1")
        self.max_resident = max_resident
        self.last_swap: Swap | None = None
        self._backends: dict[str, Backend] = {}  # in least- to most-recently used order
        self._load_lock = threading.Lock()

    @property
    def last_swap_seconds(self) -> float | None:
        return self.last_swap.seconds if self.last_swap else None

    def get(self, spec: ModelSpec, progress=None) -> Backend:
        """The loaded backend for `spec`; `progress(step, total, what)` hears a first gguf-* export."""
        key = spec_key(spec)
        if self.max_resident is None and key in self._backends:
            return self._backends[key]
        if self._load_lock.locked():
            status("waiting for another model to finish loading (one load at a time)")
        with self._load_lock:
            if key in self._backends:
                self._backends[key] = self._backends.pop(key)  # now the most recently used
                return self._backends[key]
            t0 = time.perf_counter()
            unloaded = self._make_room()
            t1 = time.perf_counter()
            # dtype "auto": the path measured fastest here that fits (dtype_choice.py says why)
            resolved, choice = resolve(spec, loaded=list(self._backends.values()))
            check_fits(resolved, loaded=list(self._backends.values()))  # before any weights are read
            log.info("loading %s from %s%s", spec.name, spec.source, f" ({choice.line})" if choice else "")
            status(f"loading {spec.label}" + (f" · {choice.line}" if choice else ""))
            backend = open_backend(resolved, progress or _status_progress)
            backend.dtype_choice = choice.line if choice else ""
            self._backends[key] = backend
            if unloaded:
                self.last_swap = Swap(unloaded, spec.label, t1 - t0, time.perf_counter() - t1)
                log.info("swapped out %s for %s in %.1f s", ", ".join(unloaded), spec.label, self.last_swap.seconds)
            return self._backends[key]

    def _make_room(self) -> list[str]:
        """Unload least recently used backends until one more fits under max_resident."""
        if self.max_resident is None:
            return []
        labels = []
        while len(self._backends) >= self.max_resident:
            backend = self._backends.pop(next(iter(self._backends)))
            labels.append(backend.label)
            backend.close()
            del backend
        if labels:
            gc.collect()  # return the weights' memory before the next model is read
        return labels

    def is_loaded(self, spec: ModelSpec) -> bool:
        return spec_key(spec) in self._backends

    def loaded(self) -> list[Backend]:
        return list(self._backends.values())

    def unload(self, spec: ModelSpec) -> None:
        backend = self._backends.pop(spec_key(spec), None)
        if backend is not None:
            backend.close()


def _status_progress(step: int, total: int, what: str) -> None:
    """A gguf-* export's progress, as a status line the waiting pane shows (progress.py)."""
    status(f"{what} ({step}/{total})")
