"""`ModelPool`: loaded backends, shared by both sides and by every user of one app process.

Loads on demand, one load at a time (two concurrent loads would double peak memory), and
reuses a backend when both sides name the same configuration.
"""

from __future__ import annotations

import json
import logging
import threading

from llm_compare.backends import open_backend
from llm_compare.backends.base import Backend
from llm_compare.specs import ModelSpec

log = logging.getLogger(__name__)


def spec_key(spec: ModelSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True, default=str)


class ModelPool:
    def __init__(self):
        self._backends: dict[str, Backend] = {}
        self._load_lock = threading.Lock()

    def get(self, spec: ModelSpec) -> Backend:
        key = spec_key(spec)
        if key in self._backends:
            return self._backends[key]
        with self._load_lock:
            if key not in self._backends:
                check = _preflight()
                if check:
                    check(spec, loaded=list(self._backends.values()))
                log.info("loading %s from %s", spec.name, spec.source)
                self._backends[key] = open_backend(spec)
            return self._backends[key]

    def is_loaded(self, spec: ModelSpec) -> bool:
        return spec_key(spec) in self._backends

    def loaded(self) -> list[Backend]:
        return list(self._backends.values())

    def unload(self, spec: ModelSpec) -> None:
        backend = self._backends.pop(spec_key(spec), None)
        if backend is not None:
            backend.close()

    def unload_all_except(self, keep: list[ModelSpec]) -> None:
        keys = {spec_key(s) for s in keep}
        for key in [k for k in self._backends if k not in keys]:
            self._backends.pop(key).close()


def _preflight():
    """The memory check before a load (loading.memory.check_fits), when that module is present."""
    try:
        from llm_compare.loading.memory import check_fits
    except ImportError:
        return None
    return check_fits
