"""`exported_gguf(source, dtype)`: a model directory as a GGUF file llama.cpp runs, made once and cached.

The dtypes `gguf-f32`, `gguf-f16`, `gguf-q8_0` and `gguf-q4_k_m` name the GGUF type. The file lives
in `<cache>/gguf-export/<key>/<type>.gguf`, where the key covers the directory's path and each
weight, config and tokenizer file's size and modification time, so a second start finds it with a
few `stat` calls. Making it:

- refuses first, with numbers, when free disk (the GGUF, plus the 16-bit intermediate for the
  quantized types, both sized by `size_model.gguf_bytes`) or free RAM (the largest tensor in float32 plus a shard mapping) is too small;
- writes under `<type>.*.partial-<pid>` names and renames at the end, with a lock per type so two
  processes never export the same file at once; leftovers of a killed export are deleted by the next
  one, another type's only when no process holds that type's lock (several types export at once);
- a full disk or any other OS error is one line saying what to free, with nothing partial left;
- records size and checksums of the file's head and tail beside it (`<type>.gguf.json`): a cached
  file that does not match is reported once and rebuilt (llama.cpp aborts the process on some
  malformed files, so they must never reach it);
- reports progress through `progress(step, total, what)` (see `Progress`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import psutil

from llm_compare.errors import UserError
from llm_compare.machine import cache_root, cache_write_error
from llm_compare.loading.gguf.plan import ExportPlan, plan_export
from llm_compare.loading.gguf.write import Progress, quantize, write_gguf
from llm_compare.loading.memory import count_parameters
from llm_compare.loading.size_model import file_type, gguf_bytes
from llm_compare.specs import GGUF_DTYPES

log = logging.getLogger(__name__)
EXPORTER_VERSION = "2"  # bump when the written files change meaning (2: chat_template.jinja templates)
GiB = 1024**3
CHECK_BYTES = 1 << 20  # checksummed at each end of a cached file


def export_steps(dtype: str) -> tuple[str, str | None]:
    """(the mode we write the file in, the type llama.cpp's quantizer then makes of it, or None)."""
    kind = file_type(dtype)
    return (kind, None) if kind in ("f32", "f16") else ("source", kind)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def cache_dir(plan: ExportPlan) -> Path:
    """The folder for one source directory's exports, keyed by its files' identity."""
    parts = [str(plan.directory.resolve()), EXPORTER_VERSION]
    for f in plan.files:
        st = f.stat()
        parts.append(f"{f.name}|{st.st_size}|{st.st_mtime_ns}")
    return cache_root() / "gguf-export" / hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def needs(plan: ExportPlan, dtype: str) -> tuple[int, int]:
    """(free disk bytes, free RAM bytes) exporting `plan` as `dtype` needs: the file (and the 16-bit
    intermediate llama.cpp quantizes), tensor by tensor, plus room for the header and vocabulary."""
    mode, quantized = export_steps(dtype)
    table = count_parameters(plan.config.to_dict()).table
    disk = gguf_bytes(table, quantized or mode) + (gguf_bytes(table, "f16") if quantized else 0)
    c = plan.config
    largest = max(c.vocab_size * c.hidden_size, 2 * c.intermediate_size * c.hidden_size)
    largest_shard = max(f.stat().st_size for f in plan.shards.files)
    ram = largest * (4 + 2) + largest_shard + 256 * 1024**2
    return int(disk * 1.02) + 64 * 1024**2, int(ram)


def check_room(plan: ExportPlan, dtype: str, folder: Path) -> None:
    disk, ram = needs(plan, dtype)
    free_disk = shutil.disk_usage(folder).free
    if free_disk < disk:
        raise UserError(
            f"exporting {plan.directory.name} as {dtype} needs ≈{_gib(disk)} free disk in {folder} but "
            f"{_gib(free_disk)} is free; free some space or set LLM_COMPARE_CACHE to a larger disk"
        )
    free_ram = psutil.virtual_memory().available
    if free_ram < ram:
        raise UserError(
            f"exporting {plan.directory.name} as {dtype} needs ≈{_gib(ram)} free RAM but {_gib(free_ram)} "
            "is available; close other programs (or unload a model) and start again"
        )


def fingerprint(path: Path) -> dict:
    """Size and checksums of the first and last MiB: cheap, and catches truncation and overwrites."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(CHECK_BYTES)
        f.seek(max(0, size - CHECK_BYTES))
        tail = f.read(CHECK_BYTES)
    return {"size": size, "head": hashlib.sha256(head).hexdigest(), "tail": hashlib.sha256(tail).hexdigest()}


def cached_problem(path: Path) -> str | None:
    """Why a cached export cannot be used, or None when it is intact."""
    record = path.with_name(path.name + ".json")
    try:
        expected = json.loads(record.read_text())
        if fingerprint(path) != expected:
            return "its size or contents changed since it was written"
    except FileNotFoundError:
        return "its checksum record is missing"
    except (OSError, ValueError) as e:
        return f"it cannot be read ({e})"
    return None


def discard(path: Path, problem: str) -> None:
    """Remove a cached export that cannot be used, saying so once (the next start rebuilds it)."""
    log.warning("cached GGUF %s is corrupt (%s); rebuilding it", path, problem)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".json").unlink(missing_ok=True)


def terminal_progress() -> Progress:
    """A one-line progress bar on a terminal's stderr; elsewhere a log line every tenth."""
    shown = [-1]

    def report(done: int, total: int, what: str) -> None:
        if sys.stderr.isatty():
            filled = int(30 * done / max(total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {what[:70]:<70}")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif done * 10 // max(total, 1) != shown[0]:
            shown[0] = done * 10 // max(total, 1)
            log.info("%d/%d %s", done, total, what)

    return report


def exported_gguf(source, dtype: str, progress: Progress | None = None) -> Path:
    """The cached GGUF for a resolved source at `dtype`, made (with progress) when absent or corrupt."""
    plan = plan_export(source)
    folder = cache_dir(plan)
    target = folder / f"{dtype}.gguf"
    if target.is_file() and cached_problem(target) is None:
        return target
    doing = f"exporting {plan.directory.name} as {dtype}"
    if target.exists() and not target.is_file():
        raise UserError(f"{doing}: {target} is a directory (or other non-file) where the cached GGUF belongs; "
                        "remove it and start again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{dtype}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be exporting the same file
            if target.is_file():
                problem = cached_problem(target)
                if problem is None:
                    return target
                discard(target, problem)
            remove_abandoned_partials(folder, dtype)
            check_room(plan, dtype, folder)
            build(plan, dtype, target, progress)
    except OSError as e:  # disk full, a directory in the way, permissions: one line, nothing partial kept
        raise cache_write_error(e, doing, folder, needs(plan, dtype)[0]) from None
    return target


def remove_abandoned_partials(folder: Path, dtype: str) -> None:
    """Delete partial files of exports that were killed. This type's are abandoned (the caller holds its
    lock); another type's only when no process holds that type's lock (its exporter is gone)."""
    for leftover in folder.glob("*.partial-*"):
        owner = leftover.name.split(".", 1)[0]
        if owner == dtype:
            leftover.unlink(missing_ok=True)
            continue
        try:
            with (folder / f"{owner}.lock").open("a") as other:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
                leftover.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # another process is exporting that type right now


def build(plan: ExportPlan, dtype: str, target: Path, progress: Progress | None) -> None:
    """Write (and quantize) under partial names, record the checksum, then rename into place."""
    mode, quantized = export_steps(dtype)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    written = partial if not quantized else target.with_name(f"{dtype}.source.partial-{os.getpid()}")
    steps = [0]

    def step(done, total, what):
        steps[0] = total + (1 if quantized else 0)
        if progress:
            progress(done, steps[0], f"exporting {plan.directory.name}: {what}")

    record = target.with_name(target.name + ".json")
    try:
        write_gguf(plan, written, mode, step)
        if quantized:
            if progress:
                progress(steps[0] - 1, steps[0], f"exporting {plan.directory.name}: llama.cpp quantizing to {quantized}")
            quantize(written, partial, quantized)
            written.unlink()
        record.write_text(json.dumps(fingerprint(partial)))
        partial.rename(target)
        if progress:
            progress(steps[0], steps[0], f"exported {plan.directory.name} as {dtype}")
    except BaseException:
        record.unlink(missing_ok=True)  # a record without its file would be a partial leftover too
        raise
    finally:
        partial.unlink(missing_ok=True)
        written.unlink(missing_ok=True)


def disk_needs(source) -> tuple[Path, int, dict[str, int]]:
    """(cache folder, its free bytes, {gguf dtype: disk bytes an export still needs, 0 when cached})."""
    plan = plan_export(source)
    folder = cache_dir(plan)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    needed = {d: 0 if (folder / f"{d}.gguf").is_file() else needs(plan, d)[0] for d in GGUF_DTYPES}
    return folder, shutil.disk_usage(existing).free, needed
