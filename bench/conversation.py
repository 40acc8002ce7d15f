"""Conversations at seed size: first-token time per turn, with and without prefix reuse, every local path.

Five turns of about 150 tokens each, 48 greedy new tokens per turn (the model's own replies stay in
the history), on random-weight checkpoints at ChatGLM3-6B and Qwen-7B-Chat widths (bench/memory.py
builders, as bench/seven_b.py) at 1 and 3 layers, projected to full depth (a + b·layers). Paths,
each in its own process:

- `gguf-q4_k_m`: the directory exported and run through the engine (backends/llamacpp_exported.py);
- `llama.cpp`: the same GGUF file as a plain llamacpp model (its own template, or raw text);
- `transformers bf16`;
- `llama_cpp.server` on the same GGUF (127.0.0.1 only) through the project's OpenAI backend: it
  keeps its slot's KV cache, the reference this project should not be slower than.

Each local path runs the conversation with reuse (backends/kv_states.py), then answers the same
messages with `backend.reuse = False` (every prompt read in full), then two conversations
alternating on the one instance (the saved-cache budget holds the waiting one).

    flock /work/wt/bench.lock nice -n 0 python bench/conversation.py --models Qwen-7B-Chat --layers 3
    python bench/conversation.py --markdown docs/conversations.md     # also write the tables there
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header, run_heading, write_tables  # noqa: E402
from seven_b import SEEDS, fit, long_prompt, prepare  # noqa: E402


PATHS = ("gguf-q4_k_m", "llama.cpp", "transformers bf16", "llama_cpp.server")
LOCAL = PATHS[:3]
FULL_DEPTH = {"ChatGLM3-6B": 28, "Qwen-7B-Chat": 32}
LEADS = ["Please read this text and answer briefly.", "Now say it again in other words, please.",
         "Could you add one more detail?", "Summarise all of that in a list.", "Which part matters most, and why?"]


def user_turns(fmt, turns: int, tokens: int) -> list[str]:
    """`turns` user messages, all different, each `tokens` tokens long as formatted alone (to the
    word): every turn brings the same new work, so turn 5 ÷ turn 1 measures only what the past costs."""
    return [long_prompt(fmt, tokens, lead=LEADS[i % len(LEADS)], step=1)[0]["content"] for i in range(turns)]


def reply(backend, messages, params) -> dict:
    from llm_compare.engine import stream_reply

    last = list(stream_reply(backend, messages, params))[-1]
    if last.finish_reason not in ("length", "stop"):
        raise SystemExit(f"a turn ended with {last.finish_reason}: {last.text[:200]}")
    m = last.metrics
    return {"text": last.text, "first_s": m.ttft_s, "prompt": m.prompt_tokens, "reused": m.reused_tokens or 0}


def converse(backend, users: list[str], params) -> tuple[list[dict], list[list[dict]]]:
    """One conversation: each turn's figures, and the messages each turn was asked with."""
    messages, turns, asked = [], [], []
    for text in users:
        messages = messages + [{"role": "user", "content": text}]
        asked.append(messages)
        turns.append(reply(backend, messages, params))
        messages = messages + [{"role": "assistant", "content": turns[-1]["text"]}]
    return turns, asked


def alternate(backend, users: list[str], params, turns: int) -> list[dict]:
    """Two conversations taking turns on one instance: A1 B1 A2 B2 ..."""
    history = {"A": [], "B": []}
    out = []
    for i in range(turns):
        for name in ("A", "B"):
            text = users[i] if name == "A" else users[i][::-1]  # B: another conversation, as long
            history[name] = history[name] + [{"role": "user", "content": text}]
            r = reply(backend, history[name], params)
            history[name] = history[name] + [{"role": "assistant", "content": r["text"]}]
            out.append({"session": name, "turn": i + 1, **{k: r[k] for k in ("first_s", "prompt", "reused")}})
    return out


def open_path(directory: Path, path: str, threads: int):
    """The backend for a path, and what to stop afterwards (the server's process)."""
    from llm_compare.backends import open_backend
    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.header import check_gguf
    from llm_compare.loading.gguf.export import exported_gguf
    from llm_compare.specs import ModelSpec

    if path == "transformers bf16":
        return open_backend(ModelSpec(name="bench", source=str(directory), dtype="bfloat16", threads=threads)), None
    file = exported_gguf(resolve_source(str(directory)), "gguf-q4_k_m")
    if path == "gguf-q4_k_m":
        return open_backend(ModelSpec(name="bench", source=str(directory), dtype="gguf-q4_k_m", threads=threads)), None
    if path == "llama.cpp":
        template = check_gguf(file).metadata.get("tokenizer.chat_template")
        spec = ModelSpec(name="bench", source=str(file), backend="llamacpp", threads=threads,
                         chat_format="auto" if template else "raw")
        return open_backend(spec), None
    return start_server(file, threads)


def start_server(file: Path, threads: int):
    """llama_cpp.server on 127.0.0.1 serving `file`, and the project's OpenAI backend for it."""
    import socket

    import httpx

    from llm_compare.backends.openai import OpenAIBackend
    from llm_compare.specs import CONTEXT_TOKENS, ModelSpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(file), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(CONTEXT_TOKENS), "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise SystemExit("llama_cpp.server did not come up")
    return OpenAIBackend(ModelSpec(name="server", source=url, backend="openai", timeout_s=600)), proc


def child(directory: str, path: str, args) -> None:
    """One path, one process: JSON with its turns (reuse on and off) and the alternating sessions."""
    from llm_compare.params import GenerationParams

    threads = os.cpu_count() or 1
    backend, server = open_path(Path(directory), path, threads)
    try:
        params = GenerationParams(max_new_tokens=args.new_tokens, greedy=True)
        fmt = backend.prompt if hasattr(backend, "prompt") else getattr(backend, "chat_format", None)
        if fmt is None:  # the server: the exported path's format sizes the messages
            from llm_compare.backends.llamacpp_exported import text_side
            from llm_compare.loading import resolve_source
            from llm_compare.specs import ModelSpec

            fmt = text_side(resolve_source(directory), ModelSpec(name="x", source=directory)).chat_format
        users = user_turns(fmt, args.turns, args.turn_tokens)
        reply(backend, [{"role": "user", "content": "Hello."}], params.replace(max_new_tokens=2))  # warm-up
        on, asked = converse(backend, users, params)
        out = {"on": on}
        if path in LOCAL:
            backend.reuse = False
            out["off"] = [reply(backend, messages, params) for messages in asked]
            backend.reuse = True
            out["alternating"] = alternate(backend, users, params, args.alternating)
        for turn in out["on"] + out.get("off", []):
            turn.pop("text", None)
        print(json.dumps(out))
    finally:
        backend.close()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def run_child(directory: Path, path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", str(directory), path, "--turns", str(args.turns),
           "--turn-tokens", str(args.turn_tokens), "--new-tokens", str(args.new_tokens),
           "--alternating", str(args.alternating)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{path} on {directory.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    """Per turn, the least disturbed of the repeated runs (the machine is shared)."""
    def least(turns):  # a run that returned no token (None) counts only if every run did
        times = [t["first_s"] for t in turns if t["first_s"] is not None]
        return min(times) if times else None

    return {key: [dict(turns[0], first_s=least(turns)) for turns in zip(*(r[key] for r in runs))] for key in runs[0]}


def first_token(results: dict, path: str, key: str, layers) -> list[float]:
    """First-token seconds per turn at a measured layer count, or projected to full depth ("full")."""
    if layers != "full":
        return [t["first_s"] for t in results[layers][path][key]]
    counts = sorted(k for k in results if k != "depth")
    per_turn = zip(*([t["first_s"] for t in results[n][path][key]] for n in counts))
    return [None if None in ys else fit(counts, list(ys), results["depth"]) for ys in per_turn]


def turn_table(results: dict, layers, paths) -> list[str]:
    local = [p for p in paths if p in LOCAL]
    head = ["turn", "prompt tokens"]
    for p in local:
        head += [f"{p}: reuse (ids reused)", f"{p}: full prompt"]
    if "llama_cpp.server" in paths:
        head += ["llama_cpp.server"] + (["gguf-q4_k_m ÷ server"] if "gguf-q4_k_m" in paths else [])
    shown = results[min(k for k in results if k != "depth")] if layers == "full" else results[layers]
    ref = shown[paths[0]]["on"]
    cols = {(p, k): first_token(results, p, k, layers) for p in local for k in ("on", "off")}
    if "llama_cpp.server" in paths:
        cols["llama_cpp.server", "on"] = first_token(results, "llama_cpp.server", "on", layers)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, turn in enumerate(ref):
        row = [str(i + 1), str(turn["prompt"])]
        for p in local:
            row += [f"{cols[p, 'on'][i]:.2f} s ({shown[p]['on'][i]['reused']})", f"{cols[p, 'off'][i]:.2f} s"]
        if "llama_cpp.server" in paths:
            server = cols["llama_cpp.server", "on"][i]
            row.append("no token" if server is None else f"{server:.2f} s")
            if "gguf-q4_k_m" in paths:
                row.append("—" if server is None else f"{cols['gguf-q4_k_m', 'on'][i] / server:.2f}×")
        lines.append("| " + " | ".join(row) + " |")
    last = [f"{p} {cols[p, 'on'][-1] / cols[p, 'on'][0]:.2f}×" for p in local]
    server = cols.get(("llama_cpp.server", "on"))
    if server and None not in (server[0], server[-1]):
        last.append(f"llama_cpp.server {server[-1] / server[0]:.2f}×")
    return lines + ["", f"last turn ÷ first turn, with reuse: {', '.join(last)}"]


def alternating_table(results: dict, layers: int, paths) -> list[str]:
    local = [p for p in paths if p in LOCAL]
    head = ["request", "prompt tokens", *[f"{p}: reused / first token" for p in local]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = zip(*(results[layers][p]["alternating"] for p in local))
    for turns in rows:
        cells = [f"{t['reused']} / {t['first_s']:.2f} s" for t in turns]
        lines.append(f"| {turns[0]['session']}{turns[0]['turn']} | {turns[0]['prompt']} | " + " | ".join(cells) + " |")
    return lines


def report(name: str, results: dict, paths) -> list[str]:
    out = []
    for layers in [k for k in results if k != "depth"] + (["full"] if len(results) > 2 else []):
        what = f"projected to {results['depth']} layers" if layers == "full" else f"{layers} layer(s)"
        out += ["", f"### {name} widths, {what}: first-token time per turn", "", *turn_table(results, layers, paths)]
    if any(p in LOCAL for p in paths):
        deepest = max(k for k in results if k != "depth")
        out += ["", f"### {name} widths, {deepest} layer(s): two conversations alternating on one instance", "",
                *alternating_table(results, deepest, paths)]
    return out


KV_TYPES = {  # llama.cpp context options of each KV cache setting compared by --kv-types
    "q8_0, flash attention": dict(type_k=8, type_v=8, flash_attn=True),
    "f16, flash attention": dict(type_k=1, type_v=1, flash_attn=True),
    "f16": dict(type_k=1, type_v=1, flash_attn=False),
    "q8_0 K, f16 V": dict(type_k=8, type_v=1, flash_attn=False),
}


def kv_types(file: Path, new: int, at: int, repeat: int) -> list[str]:
    """Prompt evaluation of `new` ids from an empty cache and after `at` cached ids, for each KV cache
    setting (round-robin, best of `repeat`), on one exported file with every core."""
    import random

    import llama_cpp

    from llm_compare.backends.llamacpp_eval import evaluate_blocks, keep_prefix
    from llm_compare.specs import CONTEXT_TOKENS

    threads = os.cpu_count() or 1
    llms = {name: llama_cpp.Llama(model_path=str(file), n_ctx=CONTEXT_TOKENS, n_threads=threads,
                                  n_threads_batch=threads, verbose=False, **kw) for name, kw in KV_TYPES.items()}
    rng = random.Random(0)
    ids = [rng.randrange(1000, min(60000, next(iter(llms.values())).n_vocab())) for _ in range(at + new)]

    def timed(llm, start: int) -> float:
        keep_prefix(llm, 0)
        if start:
            list(evaluate_blocks(llm, ids[:start], reuse=False))
        t0 = time.perf_counter()
        list(evaluate_blocks(llm, ids[: start + new]))
        return time.perf_counter() - t0

    best = {name: [float("inf"), float("inf")] for name in llms}
    for _ in range(repeat):
        for name, llm in llms.items():
            best[name] = [min(best[name][0], timed(llm, 0)), min(best[name][1], timed(llm, at))]
    for llm in llms.values():
        llm.close()
    lines = [f"| KV cache | {new} new ids, empty cache | {new} new ids after {at} | ratio |", "|---|---|---|---|"]
    lines += [f"| {name} | {a:.3f} s | {b:.3f} s | {b / a:.2f}× |" for name, (a, b) in best.items()]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(SEEDS), default=list(SEEDS))
    p.add_argument("--layers", type=int, nargs="+", default=[1, 3], help="layer counts measured (default 1 3)")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--turn-tokens", type=int, default=150, help="tokens per user message (default 150)")
    p.add_argument("--new-tokens", type=int, default=48, help="greedy tokens per reply (default 48)")
    p.add_argument("--alternating", type=int, default=3, help="turns per conversation when two alternate")
    p.add_argument("--repeat", type=int, default=1, help="runs per path, round-robin; the best is reported")
    p.add_argument("--workdir", default="/tmp/llm_compare_bench_conversation")
    p.add_argument("--markdown", help="also write the tables to this file (e.g. docs/conversations.md)")
    p.add_argument("--prepare", action="store_true", help="only build the checkpoints and exports (no timing)")
    p.add_argument("--kv-types", action="store_true",
                   help="only compare KV cache types on the exported files (prompt evaluation at short and long context)")
    p.add_argument("--child", nargs=2, metavar=("DIR", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, args)
        return
    if args.prepare:
        prepare(args, ("gguf-q4_k_m",))
        return
    header("conversations at seed size: first token per turn, with and without prefix reuse")
    heading, lines = run_heading(), []
    print(heading, flush=True)
    dirs = prepare(args, ("gguf-q4_k_m",))
    if args.kv_types:
        from llm_compare.loading import resolve_source
        from llm_compare.loading.gguf.export import exported_gguf

        for (name, layers), directory in dirs.items():
            file = exported_gguf(resolve_source(str(directory)), "gguf-q4_k_m")
            part = ["", f"### {name} widths, {layers} layer(s), gguf-q4_k_m: prompt evaluation by KV cache type", "",
                    *kv_types(file, args.turn_tokens, 1000 - args.turn_tokens, max(args.repeat, 3))]
            print("\n".join(part), flush=True)
            lines += part
        lines.append(f"\nload average {os.getloadavg()[0]:.1f} at the end")
        print(lines[-1])
        if args.markdown:
            write_tables(args.markdown, __file__, heading, lines, "Conversations at seed size", part="kv-types")
        return
    for name in args.models:
        results: dict = {"depth": FULL_DEPTH[name]}
        for layers in args.layers:
            runs = {path: [] for path in args.paths}
            for _ in range(args.repeat):
                for path in args.paths:
                    runs[path].append(run_child(dirs[name, layers], path, args))
                    print(f"# {name} {layers} layer(s) {path}: done (load {os.getloadavg()[0]:.1f})", flush=True)
            results[layers] = {path: best_of(r) for path, r in runs.items()}
            (Path(args.workdir) / f"results-{name}-{layers}.json").write_text(json.dumps(results[layers]))
        part = [*report(name, results, args.paths), f"\nload average {os.getloadavg()[0]:.1f} after {name}"]
        print("\n".join(part), flush=True)
        if args.markdown:  # a block per model: a model re-measured alone replaces only its own tables
            write_tables(args.markdown, __file__, heading, part, "Conversations at seed size", part=name)


if __name__ == "__main__":
    main()
