"""`python app.py` flags: where to serve, who may enter, which models start in the pickers.

Kept free of Gradio so `--help` is instant and the checks are testable. The share check runs
before launch: Gradio itself, offline, either prints a warning and keeps serving locally or
blocks for a minute, so a user who asked for a public link would not learn it failed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.commands.flags import add_model_args, check_model_args
from llm_compare.specs import MAX_TEXT_BYTES, check_range, max_threads, read_capped

SHARE_API = "https://api.gradio.app/v3/tunnel-request"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="app.py",
        description="Side-by-side chat comparison of two local LLMs on CPU, with votes and a leaderboard.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also create a public *.gradio.live link (needs internet and --auth)")
    p.add_argument("--share-public", action="store_true", help="allow --share without --auth (anyone with the link can use your CPU)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS", help="require this login (repeatable)")
    p.add_argument("--auth-file", help="file with one USER:PASS per line (# comments allowed)")
    add_model_args(p)  # --model-a/-b, --registry, --dtype-a/-b, --threads-a/-b, --trust-remote-code: as the CLI
    p.add_argument("--one-model-at-a-time", action="store_true",
                   help="for models that do not fit in RAM together: keep one loaded, swap per side "
                        "(turns run A then B; the swap time shows in the pane)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="comparisons run at once across all users (default 1: others queue; each uses the whole CPU)")
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--no-votes", action="store_true", help="run without a vote database (no voting, no leaderboard)")
    return p


def parse_auth(pairs: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """USER:PASS strings (flags and file) -> Gradio's auth list; a bad entry is a UserError."""
    entries = [(f"--auth {p}", p) for p in pairs]
    if auth_file:
        path = Path(auth_file).expanduser()
        data = read_capped(path, MAX_TEXT_BYTES, f"--auth-file {path}", "pass an existing file of USER:PASS lines")
        lines = data.decode("utf-8", "replace").splitlines()
        entries += [(f"{path}:{i}", ln.strip()) for i, ln in enumerate(lines, 1)
                    if ln.strip() and not ln.strip().startswith("#")]
        if not any(where.startswith(str(path)) for where, _ in entries):
            raise UserError(f"--auth-file {path} has no USER:PASS lines")
    out = []
    for where, entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise UserError(f"{where}: expected USER:PASS with both parts non-empty")
        out.append((user, password))
    return out


def check_flags(args) -> list[tuple[str, str]]:
    """Validate flag combinations; return the auth list."""
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a port number; use 1-65535")
    check_range(args.concurrency, 1, max_threads(), "--concurrency", " (each comparison runs on every core)")
    check_model_args(args)  # --threads-a/-b: the CLI's check
    auth = parse_auth(args.auth, args.auth_file)
    if args.share and not auth and not args.share_public:
        raise UserError(
            "--share makes the app public: add --auth USER:PASS (or --auth-file), "
            "or pass --share-public to allow anyone with the link"
        )
    return auth


def check_share_reachable(timeout_s: float = 3.0) -> None:
    """Fail fast when the share server cannot be reached (offline boxes)."""
    import httpx  # installed with gradio; imported here to keep --help fast

    server = os.environ.get("GRADIO_SHARE_SERVER_ADDRESS")
    try:
        if server:
            import socket

            host, _, port = server.rpartition(":")
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        else:
            httpx.get(SHARE_API, timeout=timeout_s).raise_for_status()
    except Exception as e:
        target = server or "api.gradio.app"
        raise UserError(
            f"--share needs internet access to {target} and it is not reachable ({type(e).__name__}); "
            "run without --share and open the port yourself (e.g. --host 0.0.0.0 behind a firewall or SSH tunnel)"
        ) from None
