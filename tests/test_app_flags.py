"""`python app.py` flags: auth parsing, share safety, offline share failing fast, --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_compare.errors import UserError
from llm_compare.app_flags import build_parser, check_flags, parse_auth

ROOT = Path(__file__).resolve().parent.parent


def args_for(*argv):
    return build_parser().parse_args(list(argv))


def run_app(*argv, timeout=60):
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    return subprocess.run([sys.executable, "app.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_auth_from_flags_and_file(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# team\nalice:s3cret\n\nbob:pa:ss\n", encoding="utf-8")
    assert parse_auth(["carol:x"], str(f)) == [("carol", "x"), ("alice", "s3cret"), ("bob", "pa:ss")]


@pytest.mark.parametrize("bad", ["nopassword", ":x", "user:"])
def test_malformed_auth_is_a_user_error(bad):
    with pytest.raises(UserError, match="USER:PASS"):
        parse_auth([bad], None)


def test_missing_auth_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--auth-file"):
        parse_auth([], str(tmp_path / "nope.txt"))


def test_share_without_auth_is_refused_unless_public():
    with pytest.raises(UserError, match="--share-public"):
        check_flags(args_for("--share"))
    assert check_flags(args_for("--share", "--share-public")) == []
    assert check_flags(args_for("--share", "--auth", "u:p")) == [("u", "p")]


@pytest.mark.parametrize("argv", [["--port", "0"], ["--concurrency", "0"], ["--threads-a", "0"]])
def test_out_of_range_numbers_are_refused(argv):
    with pytest.raises(UserError):
        check_flags(args_for(*argv))


def test_help_lists_every_flag():
    out = run_app("--help").stdout
    for flag in ("--host", "--port", "--share", "--auth", "--auth-file", "--model-a", "--model-b", "--registry",
                 "--concurrency", "--threads-a", "--threads-b"):
        assert flag in out


def test_share_offline_exits_2_with_a_message_instead_of_hanging():
    # This machine has no route to api.gradio.app; the timeout only guards against a hang.
    r = run_app("--share", "--auth", "u:p", "--port", "7999", timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("error: --share needs internet access") and "Traceback" not in r.stderr


def test_share_without_auth_exits_2_before_touching_the_network():
    r = run_app("--share")
    assert r.returncode == 2 and "--auth" in r.stderr and "Traceback" not in r.stderr


def test_unknown_model_flag_exits_2_with_the_registry_hint():
    r = run_app("--model-a", "no-such-model", "--port", "7998", timeout=120)
    assert r.returncode == 2 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_auth_protects_the_app(tmp_path):
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--auth", "alice:s3cret", "--no-votes"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert httpx.get(f"{url}/config", timeout=5).status_code == 401
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.post("/login", data={"username": "alice", "password": "wrong"}).status_code == 400
            assert client.post("/login", data={"username": "alice", "password": "s3cret"}).status_code == 200
            assert client.get("/config").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
