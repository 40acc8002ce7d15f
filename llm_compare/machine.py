"""Facts about the machine this process runs on, and the per-machine cache of measured ones.

Defaults that depend on the CPU (precision, threads, llama.cpp buffers) are measured here once and
cached, never fitted to one machine's figures: the key names the CPU model, its flags and the
library versions, so a new CPU (or a new torch/llama.cpp) measures again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from llm_compare.errors import UserError

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted weights, exports and probe results live (LLM_COMPARE_CACHE overrides)."""
    return Path(os.environ.get("LLM_COMPARE_CACHE", Path.home() / ".cache" / "llm_compare"))


def cache_write_error(e: OSError, doing: str, folder: Path, need: int | None = None) -> UserError:
    """One line for an OS error while writing into the cache (`doing`: "exporting m as gguf-f16"),
    saying what to free or fix; the caller has removed its partial files."""
    try:
        free = f"{shutil.disk_usage(folder).free / 2**30:.1f} GiB free"
    except OSError:
        free = "free space unknown"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        want = f"≈{need / 2**30:.1f} GiB" if need else "space"
        return UserError(f"{doing}: the disk filled up in {folder} ({free}); nothing partial was kept; "
                         f"free {want} there or set LLM_COMPARE_CACHE to a larger disk, then start again")
    where = f" ({e.filename})" if e.filename else ""
    return UserError(f"{doing}: {e.strerror or e}{where}; nothing partial was kept; check that {folder} is "
                     "writable (or set LLM_COMPARE_CACHE to another folder), then start again")


def rss() -> int:
    """This process's resident set size, in bytes."""
    return psutil.Process().memory_info().rss


def anon_rss() -> int:
    """This process's anonymous resident memory (Linux; RSS elsewhere): what it really holds, without
    file pages such as a memory-mapped model, which the kernel can drop and read again."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
    except (OSError, StopIteration, ValueError):
        return rss()


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


BUSY_SHARE = 0.25  # other processes using more of the CPU than this during a probe: don't keep it
TICK_S = 0.01  # the kernel's CPU-time accounting step (USER_HZ = 100)
_UNCACHED: dict[tuple[str, str], object] = {}  # measured while the machine was busy: this process only
# One measurement at a time in this process (both panes may load at once, and two probes at once
# would each see half the CPU); reentrant, as a probe may need another (a GGUF probe opens llama.cpp).
_MEASURING = threading.RLock()


def probe_path(name: str) -> Path:
    return cache_root() / "probes" / f"{name}.json"


def probe_results(name: str) -> dict:
    """Every result of probe `name` kept on this machine, {key: result} (`doctor` lists them)."""
    try:
        known = json.loads(probe_path(name).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def cached_probe(name: str, key: str, measure: Callable[[], object]) -> object:
    """`measure()` once per machine and `key`, kept in `<cache>/probes/<name>.json`: the one cache
    of every probe (CPU precision and threads, matvec, GGUF paths, drafting, AMX, bandwidth).

    `key` comes from `machine_key` (this CPU plus what else decides the result). The result must be
    JSON-serialisable. A cache that cannot be written only means measuring again next time. A
    measurement taken while other processes kept more than BUSY_SHARE of the CPU busy (a test
    suite, a build: llama.cpp on all cores ran 10x slower beside one here) is used by this process
    but not written, so the next start measures again.
    """
    known = probe_results(name)
    if key in known:
        return known[key]
    with _MEASURING:
        known = probe_results(name)  # another thread may have measured it while this one waited
        if key in known:
            return known[key]
        if (name, key) in _UNCACHED:
            return _UNCACHED[name, key]
        result, others = measured_with_others_share(measure)
        if others > BUSY_SHARE:
            log.info("probe %s measured while other processes used %.0f%% of the CPU: not cached", name, 100 * others)
            _UNCACHED[name, key] = result
            return result
        _keep(name, dict(known, **{key: result}))
    return result


def _keep(name: str, known: dict) -> None:
    path = probe_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(path)
    except OSError:
        pass


def measured_with_others_share(measure: Callable[[], object]) -> tuple[object, float]:
    """`measure()` and the share of the whole CPU (0..1) other processes used meanwhile."""
    me = psutil.Process()

    def busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def own() -> float:
        t = me.cpu_times()
        return t.user + t.system

    cores = psutil.cpu_count() or 1
    busy0, own0, t0 = busy(), own(), time.monotonic()
    result = measure()
    wall = (time.monotonic() - t0) * cores
    # the kernel counts CPU time in ticks (10 ms): allow two per core, or a short probe looks busy
    others = (busy() - busy0) - (own() - own0) - 2 * TICK_S * cores
    return result, max(0.0, others / wall) if wall > 0 else 0.0
