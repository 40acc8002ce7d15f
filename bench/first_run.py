"""First run, as a user sees it: a launched app on an empty cache, one Send, time to each pane's first token.

Starts `python app.py` (the embedded default pair) with `LLM_COMPARE_CACHE` set to a new empty folder,
waits until the page answers, waits `--idle` seconds (a user opening the page and typing; 0 = Send at
once), then sends one prompt through the app's API (gradio_client, as the page does) and prints, per
pane, the seconds from Send to the first token and every loading line the pane showed on the way.

    python bench/first_run.py              # Send as soon as the page is up
    python bench/first_run.py --idle 20    # a user who takes 20 s to type
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("app did not come up")


def reply_text(chat) -> str:
    content = chat[-1]["content"] if chat else ""
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


def first_tokens(url: str, prompt: str, max_new_tokens: int) -> dict:
    """Seconds from Send to each pane's first reply text, and the loading lines each pane showed."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    job = client.submit(prompt, system="", max_new_tokens=max_new_tokens, greedy=True, api_name="/compare")
    seen = {"a": {"first_token_s": None, "lines": []}, "b": {"first_token_s": None, "lines": []}}
    for update in job:
        now = time.perf_counter() - t0
        for side, chat in (("a", update[0]), ("b", update[1])):
            text = reply_text(chat)
            if text.startswith("⏳"):
                line = text.split(" … (")[0]
                if not seen[side]["lines"] or seen[side]["lines"][-1][1] != line:
                    seen[side]["lines"].append((round(now, 1), line))
            elif text and text != "…" and seen[side]["first_token_s"] is None:
                seen[side]["first_token_s"] = now
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=0.0, help="seconds between the page coming up and Send")
    ap.add_argument("--prompt", default="Hi! What can you do?")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache (≈0.6 GB) and app.log")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from llm_compare.machine import cpu_model

    cache = Path(tempfile.mkdtemp(prefix="llm-compare-first-run-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LLM_COMPARE_CACHE=str(cache), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    log = cache / "app.log"
    t_launch = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-votes"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc, log)
        up = time.perf_counter() - t_launch
        time.sleep(args.idle)
        seen = first_tokens(url, args.prompt, args.max_new_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"# first run on an empty cache; CPU {cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"page up {up:.1f} s after launch; Send after {args.idle:.0f} s idle")
    for side in "ab":
        ft = seen[side]["first_token_s"]
        print(f"pane {side.upper()}: first token {ft:.1f} s after Send" if ft is not None else
              f"pane {side.upper()}: no token")
        for at, line in seen[side]["lines"]:
            print(f"    {at:6.1f} s  {line}")


if __name__ == "__main__":
    main()
