"""Facts about the machine this process runs on, and the per-machine cache of measured ones.

Defaults that depend on the CPU (precision, threads, llama.cpp buffers) are measured here once and
cached, never fitted to one machine's figures: the key names the CPU model, its flags and the
library versions, so a new CPU (or a new torch/llama.cpp) measures again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import psutil


def cache_root() -> Path:
    """Where converted weights, exports and probe results live (LLM_COMPARE_CACHE overrides)."""
    return Path(os.environ.get("LLM_COMPARE_CACHE", Path.home() / ".cache" / "llm_compare"))


def rss() -> int:
    """This process's resident set size, in bytes."""
    return psutil.Process().memory_info().rss


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The CPU model name, as every reported figure should name it."""
    return _cpuinfo_field("model name") or os.uname().machine


def machine_key(*parts: str) -> str:
    """A short key for this CPU (model + flags) plus `parts` (library versions, model sizes...)."""
    text = "|".join([cpu_model(), " ".join(sorted(cpu_flags())), *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_probe(name: str, key: str, measure: Callable[[], object]) -> object:
    """`measure()` once per machine and `key`, kept in `<cache>/probes/<name>.json`.

    The result must be JSON-serialisable. A cache that cannot be written only means measuring
    again next time.
    """
    path = cache_root() / "probes" / f"{name}.json"
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            tmp.replace(path)
        except OSError:
            pass
    return known[key]
