"""Issue 21 cases 2, 3 and 7 (exports and conversions never trip over each other, a full disk or a
directory in the way), and issue 20's rule that a test run never writes into the user's cache."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, USER_CACHE, build_tiny_chat_model, start_app_env
from llm_compare.errors import UserError
from llm_compare.loading import resolve_source
from llm_compare.loading.gguf import cache
from llm_compare.loading.gguf import export as gguf_export
from llm_compare.loading.gguf.plan import plan_export
from llm_compare.loading.gguf.export import cache_dir, cached_problem, exported_gguf


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("export-tiny"))


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def export_folder(directory):
    return cache_dir(plan_export(resolve_source(str(directory))))


# -- 2. two processes export one model to two types at once -------------------------------------

EXPORT = textwrap.dedent("""
    import os, sys, time
    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.export import exported_gguf

    def paused(done, total, what):  # after the first tensor: wait until the test says go
        print(done, total, flush=True)
        while sys.argv[3] != "-" and not os.path.exists(sys.argv[3]):
            time.sleep(0.05)

    print(exported_gguf(resolve_source(sys.argv[1]), sys.argv[2], paused), flush=True)
""")


def test_two_processes_exporting_two_types_of_one_model_both_finish(tiny_dir, private_cache, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    go = tmp_path / "go"

    def export(dtype, wait_for):
        return subprocess.Popen([sys.executable, "-c", EXPORT, str(tiny_dir), dtype, wait_for], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

    first = export("gguf-q8_0", str(go))
    try:
        assert first.stdout.readline(), first.stderr.read()  # its partial file is half written, and waits
        second = export("gguf-f16", "-")  # cleans up leftovers and exports while the first is mid-way
        second_out, second_err = second.communicate(timeout=600)
        go.touch()
        first_out, first_err = first.communicate(timeout=600)
    finally:
        go.touch()
        first.kill()
    assert second.returncode == 0 and "Traceback" not in second_err, second_err[-2000:]
    assert first.returncode == 0 and "Traceback" not in first_err, first_err[-2000:]
    folder = export_folder(tiny_dir)
    for dtype in ("gguf-q8_0", "gguf-f16"):
        assert cached_problem(folder / f"{dtype}.gguf") is None
    assert not list(folder.glob("*.partial-*"))


def test_cleanup_removes_only_partials_whose_exporter_is_gone(tiny_dir, private_cache):
    import fcntl

    folder = export_folder(tiny_dir)
    folder.mkdir(parents=True)
    running = folder / "gguf-q8_0.source.partial-4242"  # another process holds its type's lock: running
    abandoned = folder / "gguf-q4_k_m.gguf.partial-4343"  # nobody holds gguf-q4_k_m.lock: killed
    own_type = folder / "gguf-f16.gguf.partial-4444"  # this type: the lock this export takes proves it dead
    for path in (running, abandoned, own_type):
        path.write_bytes(b"partial")
    with (folder / "gguf-q8_0.lock").open("w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # a separate open file: conflicts like another process would
        exported_gguf(resolve_source(str(tiny_dir)), "gguf-f16")
        assert running.exists()
    assert not abandoned.exists() and not own_type.exists()


# -- 3. a disk that fills during an export or a conversion ----------------------------------------

def fill_disk(path, written: int = 4096):
    """Write a little to `path`, then find the disk full (an injected ENOSPC: the real disk is never filled)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * written)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("dtype", ["gguf-f16", "gguf-q8_0"])
def test_disk_full_during_an_export_is_one_line_with_nothing_partial_left(dtype, tiny_dir, private_cache,
                                                                          monkeypatch):
    monkeypatch.setattr(gguf_export, "write_gguf", lambda plan, path, *a: fill_disk(path))
    with pytest.raises(UserError) as err:
        exported_gguf(resolve_source(str(tiny_dir)), dtype)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"exporting {tiny_dir.name} as {dtype}: the disk filled up")
    assert "free ≈" in message and "LLM_COMPARE_CACHE" in message
    folder = export_folder(tiny_dir)
    assert sorted(p.name for p in folder.iterdir()) == [f"{dtype}.lock"]
    monkeypatch.undo()  # space freed: the next start exports
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(private_cache))
    assert cached_problem(exported_gguf(resolve_source(str(tiny_dir)), dtype)) is None


def test_disk_full_during_a_conversion_is_one_line_with_nothing_partial_left(private_cache, monkeypatch):
    from llm_compare.loading import embedded_path

    def fills(path, header, tmp, progress):
        fill_disk(tmp / "model.safetensors")

    monkeypatch.setattr(cache, "write_model_directory", fills)
    gguf = embedded_path("smollm2")
    with pytest.raises(UserError) as err:
        cache.convert_gguf(gguf)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"converting {gguf.name} for transformers: the disk filled up")
    assert [p.name for p in (private_cache / "gguf").iterdir()] == [cache.gguf_cache_dir(gguf).name + ".lock"]


def test_another_os_error_during_an_export_is_one_line_too(tiny_dir, private_cache, monkeypatch):
    def denied(plan, path, *a):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(gguf_export, "write_gguf", denied)
    with pytest.raises(UserError, match=r"as gguf-f16: Permission denied \(.*partial-\d+\); nothing partial was kept"):
        exported_gguf(resolve_source(str(tiny_dir)), "gguf-f16")


# -- 7. a directory where the cached .gguf belongs ------------------------------------------------

def test_a_directory_where_the_cached_gguf_belongs_is_one_line(tiny_dir, private_cache):
    from llm_compare.backends import open_backend
    from llm_compare.specs import ModelSpec

    (export_folder(tiny_dir) / "gguf-f16.gguf").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        open_backend(ModelSpec(name="t", source=str(tiny_dir), dtype="gguf-f16"))
    assert "\n" not in str(err.value) and "gguf-f16.gguf is a directory" in str(err.value)
    assert "remove it" in str(err.value)


# -- issue 20: the test run's own cache -----------------------------------------------------------

def listing(folder):
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) if folder.is_dir() else []


def test_a_test_run_never_writes_into_the_users_cache(session_cache, tmp_path):
    from conftest import quiet_machine
    from llm_compare import machine

    before = listing(USER_CACHE)
    assert machine.cache_root() == session_cache and USER_CACHE not in session_cache.parents
    with pytest.MonkeyPatch.context() as mp:
        quiet_machine(mp)
        machine.cached_probe("test-run-cache", "k", lambda: 1)  # what a probe writes lands in the session's
    assert (session_cache / "probes" / "test-run-cache.json").is_file()
    seen = subprocess.run([sys.executable, "-c", "from llm_compare.machine import cache_root; print(cache_root())"],
                          env=start_app_env(), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert seen.stdout.strip() == str(session_cache), seen.stderr  # apps the tests start share it
    assert listing(USER_CACHE) == before
