"""Bench helpers: load specs once, time medians; every script prints ratios measured in one run.

A bench that writes its tables into a docs page (`--markdown FILE`) heads them with `run_heading`
(CPU model, cores, date, commit, load average and the command) and writes them with
`write_tables` between its own markers, so the prose around them stays.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from llm_compare.cli import quiet_libraries  # noqa: E402

quiet_libraries()

ASK = [{"role": "user", "content": "Write a detailed explanation of why the sky is blue, with examples."}]


def median(xs):
    return statistics.median(xs)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def header(title: str) -> None:
    import torch

    from llm_compare.machine import cpu_model

    print(f"# {title}")
    print(f"# CPU {cpu_model()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"cores {os.cpu_count()}, {time.strftime('%Y-%m-%d %H:%M')}")


def git_commit() -> str:
    """The checkout's short commit ("?" outside a git checkout), with "+changes" when it has edits."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here).stdout.strip()
    except OSError:
        return "?"
    return (commit or "?") + (" +changes" if commit and dirty else "")


def run_heading(argv: list[str] | None = None) -> str:
    """The line that heads a bench's docs tables: what ran, where, when, on which code, how busy."""
    from llm_compare.machine import cpu_model

    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).name
    command = " ".join(["python", f"bench/{script}", *argv[1:]])
    return (f"CPU {cpu_model()}, {os.cpu_count()} cores · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
            f"commit {git_commit()} · load average {os.getloadavg()[0]:.1f} at start · `{command}`")


def write_tables(path: str | Path, script: str, heading: str, lines: list[str], title: str, part: str = "") -> None:
    """`heading` and `lines` between `script`'s markers in the docs page at `path` (the prose around
    them stays); a page without the markers gets them at its end, a new page gets `title` first.
    `part` names one of several blocks a bench writes (a model measured in its own run)."""
    name = Path(script).name + (f" {part}" if part else "")
    start, end = f"<!-- bench/{name} -->", f"<!-- /bench/{name} -->"
    block = "\n".join([start, "", heading, "", *lines, "", end])
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else f"# {title}\n"
    if start in text and end in text:
        text = text.split(start)[0] + block + text.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def in_worker(fn):
    """Run `fn` in a fresh thread and return its result, as the engine runs generation.

    torch work in the main thread leaves an OpenMP team there that slows the next worker thread
    (measured: engine 17 vs 33 tok/s right after main-thread generate), so raw baselines run in a
    worker too.
    """
    import threading

    out = {}

    def work():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
