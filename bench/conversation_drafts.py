"""Prompt lookup (drafts from the conversation): decode speed with and without drafts.

Part 1, the embedded SmolLM2-135M (real weights) over the presets (assets/presets.toml), greedy and
sampled, each prompt with and without drafts back to back: decode tok/s, the acceptance rate and the
share of tokens that came from drafts, separately for prompts whose answers quote the prompt (seed
prompt 1, translate / rewrite / summarize) and the others. Paths: transformers float32 (drafts on by
default: its batched logits match one-at-a-time ones), and with LLM_COMPARE_DRAFTS=on transformers
bfloat16 and llama.cpp Q4_1 (faster, but their batched logits differ, see llm_compare/drafts.py).
Part 2, Qwen-7B-Chat widths (random weights, 1 and 3 layers, bench/seven_b.py's builders): the measured
cost of one pass over k+1 tokens against one step, projected to 32 layers, and the decode speed-up it
would give with the verification passes SmolLM2's float32 path made in part 1.

    flock /work/wt/bench.lock nice -n 0 python bench/conversation_drafts.py --markdown docs/drafts.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header, run_heading, write_tables  # noqa: E402

from llm_compare import drafts  # noqa: E402

PATHS = {  # name: (registry-like spec fields, LLM_COMPARE_DRAFTS value for the drafted runs)
    "transformers fp32": (dict(dtype="float32"), "auto"),
    "transformers bf16": (dict(dtype="bfloat16"), "on"),
    "llama.cpp Q4_1": (dict(backend="llamacpp"), "on"),
}
QUOTING = ("问题1", "中译英", "Summarize")  # presets whose answers quote the prompt (plus the words below)
QUOTING_WORDS = ("translat", "rewrite", "summar")
ROWS = drafts.PROBE_ROWS
LINES: list[str] = []  # the markdown page
ARGS = None  # the parsed command line


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def quotes(preset) -> bool:
    return preset.label.startswith(QUOTING) or any(w in preset.label.lower() for w in QUOTING_WORDS)


class Trace:
    """Records what `drafts.decode` did in the last reply: rows of each pass after the prompt, and its stats."""

    def __init__(self):
        self.original, self.last = drafts.decode, None
        drafts.decode = self.decode

    def decode(self, evaluate, *args, **kwargs):
        rows: list[int] = []

        def logged(ids, n):
            rows.append(n)
            return evaluate(ids, n)

        stats = self.original(logged, *args, **kwargs)
        self.last = (rows[1:], stats)
        return stats


def one_reply(backend, messages, params, mode: str, trace: Trace) -> dict:
    from llm_compare.engine import stream_reply

    os.environ[drafts.DRAFTS_ENV] = mode
    trace.last = None
    m = list(stream_reply(backend, messages, params))[-1].metrics
    rows, stats = trace.last or ([], drafts.DraftStats())
    return {"tokens": m.new_tokens, "tok_s": m.tokens_per_s or 0.0, "from_drafts": m.draft_tokens,
            "drafted": stats.drafted, "accepted": stats.accepted, "passes": rows}


def smollm2(args, trace: Trace) -> dict:
    """Part 1: {path: {(mode, quoting): [(plain, drafted) per prompt]}}; prints the table."""
    from llm_compare.backends import open_backend
    from llm_compare.params import GenerationParams
    from llm_compare.presets import load_presets
    from llm_compare.specs import ModelSpec

    presets = load_presets()
    results = {}
    for path in args.paths:
        fields, mode = PATHS[path]
        backend = open_backend(ModelSpec(name=path, source="embedded:smollm2", **fields))
        probe = backend.draft_probe() or {}
        say(f"# {path}: probe {json.dumps(probe)}")
        runs = {}
        for i, preset in enumerate(presets):
            messages = [{"role": "user", "content": preset.text}]
            for sampled in (False, True):
                params = GenerationParams(max_new_tokens=args.tokens, greedy=not sampled, seed=1000 + i)
                best = [None, None]
                for _ in range(args.repeat):  # plain and drafted back to back: load hits both alike
                    for j, m in enumerate(("off", mode)):
                        r = one_reply(backend, messages, params, m, trace)
                        if best[j] is None or r["tok_s"] > best[j]["tok_s"]:
                            best[j] = r
                key = ("sampled" if sampled else "greedy", quotes(preset))
                runs.setdefault(key, []).append(tuple(best))
                print(f"#   {path} {key[0]:7s} {'quote' if key[1] else 'other'} {preset.label[:24]:24s} "
                      f"plain {best[0]['tok_s']:6.1f} drafts {best[1]['tok_s']:6.1f} tok/s, "
                      f"{best[1]['from_drafts']}/{best[1]['tokens']} from drafts", flush=True)
        results[path] = runs
        backend.close()
        gc.collect()
    return results


def class_figures(pairs) -> dict:
    """Decode tok/s over a class of prompts (tokens after the first / decode time), with and without drafts."""
    out = {}
    for j, name in enumerate(("plain", "drafts")):
        tokens = sum(max(0, p[j]["tokens"] - 1) for p in pairs)
        seconds = sum(max(0, p[j]["tokens"] - 1) / p[j]["tok_s"] for p in pairs if p[j]["tok_s"])
        out[name] = tokens / seconds if seconds else 0.0
    drafted = sum(p[1]["drafted"] for p in pairs)
    out["acceptance"] = sum(p[1]["accepted"] for p in pairs) / drafted if drafted else 0.0
    out["share"] = sum(p[1]["from_drafts"] for p in pairs) / max(1, sum(p[1]["tokens"] for p in pairs))
    return out


def smollm2_table(results: dict, args) -> None:
    say(f"### SmolLM2-135M over the {len(next(iter(results.values()))[('greedy', True)]) + len(next(iter(results.values()))[('greedy', False)])} presets, "
        f"{args.tokens} new tokens, best of {args.repeat}")
    say()
    say("| path | decoding | prompts | plain tok/s | with drafts tok/s | ratio | acceptance | tokens from drafts |")
    say("|---|---|---|---|---|---|---|---|")
    for path, runs in results.items():
        for (mode, quoting), pairs in sorted(runs.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
            f = class_figures(pairs)
            ratio = f["drafts"] / f["plain"] if f["plain"] else 0.0
            say(f"| {path} | {mode} | {'quoting' if quoting else 'others'} ({len(pairs)}) | {f['plain']:.1f} | "
                f"{f['drafts']:.1f} | **{ratio:.2f}×** | {f['acceptance']:.0%} | {f['share']:.0%} |")
    say()


def child(directory: str, path: str) -> None:
    """Part 2, one process per path and depth: JSON {rows: seconds of one pass over that many new tokens}."""
    from llm_compare.backends import open_backend
    from llm_compare.backends.drafting import LlamaForward, TorchForward, seconds_for_rows
    from llm_compare.specs import ModelSpec, is_gguf_dtype
    from llm_compare.threads import cpu_cores, use_torch_threads

    import torch

    spec = ModelSpec(name="bench", source=directory, dtype=path, threads=cpu_cores())
    backend = open_backend(spec)
    if is_gguf_dtype(path):
        llm = backend._idle.get()
        seconds = seconds_for_rows(lambda: LlamaForward(llm), llm.n_vocab(), budget_s=1.0)
    else:
        use_torch_threads(cpu_cores())
        torch.set_grad_enabled(False)
        seconds = seconds_for_rows(lambda: TorchForward(backend.model), backend.model.config.vocab_size, budget_s=1.0)
    rounds = [{str(r): seconds(r) for r in ROWS} for _ in range(2)]  # interleaved: a burst of load hits one round
    print(json.dumps({r: min(one[r] for one in rounds) for r in rounds[0]}))


def seven_b_dirs(args) -> dict[int, Path]:
    """Qwen-7B-Chat-shaped checkpoints (random bf16 weights) per layer count, and their exports, built once."""
    from memory import QWEN_7B_CHAT, build_checkpoint

    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.export import exported_gguf, terminal_progress
    from llm_compare.specs import is_gguf_dtype

    dirs = {}
    for layers in args.layers:
        directory = Path(args.workdir) / f"Qwen-7B-Chat-{layers}"
        build_checkpoint("Qwen-7B-Chat", QWEN_7B_CHAT | {"num_hidden_layers": layers}, directory)
        for path in args.seven_b_paths:
            if is_gguf_dtype(path):
                exported_gguf(resolve_source(str(directory)), path, terminal_progress())
        dirs[layers] = directory
        gc.collect()
    return dirs


def seven_b_costs(args) -> dict:
    """{path: {rows: seconds}} at the deepest layer count measured. Not fitted to 32 layers: with two
    layer counts a burst of load on one point gave negative slopes; the ratios are what matters."""
    dirs = seven_b_dirs(args)
    out = {}
    for path in args.seven_b_paths:
        measured = {}
        for layers in args.layers:
            cmd = [sys.executable, __file__, "--child", str(dirs[layers]), path]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{path} L={layers} failed:\n{done.stderr[-3000:]}")
            measured[layers] = {int(r): s for r, s in json.loads(done.stdout.strip().splitlines()[-1]).items()}
            print(f"#   Qwen-7B-Chat L={layers} {path}: {measured[layers]}", flush=True)
        out[path] = measured[max(args.layers)]
    return out


def projected(costs: dict, pairs) -> float:
    """Decode speed-up at these costs with the passes SmolLM2 made: plain steps vs the logged passes."""
    plain = sum(max(0, p[1]["tokens"] - 1) for p in pairs) * costs[1]
    drafted = sum(drafts.interpolated(costs, rows) for p in pairs for rows in p[1]["passes"])
    return plain / drafted if drafted else 0.0


def seven_b_table(costs: dict, results: dict) -> None:
    say(f"### Qwen-7B-Chat widths (random weights, {max(ARGS.layers)} layers): a pass over r tokens against one step")
    say()
    say("| path | one step | " + " | ".join(f"{r} tokens" for r in ROWS[1:]) + " |")
    say("|---|---|" + "---|" * (len(ROWS) - 1))
    for path, c in costs.items():
        say(f"| {path} | {c[1] * 1000:.0f} ms | " + " | ".join(f"{c[r] / c[1]:.2f}×" for r in ROWS[1:]) + " |")
    say()
    runs = results.get("transformers fp32")
    if not runs:
        return
    say("Projected decode speed-up at these costs, with the passes (tokens per pass) SmolLM2 float32 made:")
    say()
    say("| path | " + " | ".join(f"{m} {'quoting' if q else 'others'}" for m, q in sorted(runs, key=lambda k: (k[0], not k[1]))) + " |")
    say("|---|" + "---|" * len(runs))
    for path, c in costs.items():
        cells = [f"{projected(c, runs[k]):.2f}×" for k in sorted(runs, key=lambda k: (k[0], not k[1]))]
        say(f"| {path} | " + " | ".join(cells) + " |")
    say()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=["transformers fp32", "llama.cpp Q4_1"])
    p.add_argument("--tokens", type=int, default=96, help="new tokens per reply (default 96)")
    p.add_argument("--repeat", type=int, default=2, help="runs per prompt and setting; the fastest counts")
    p.add_argument("--layers", type=int, nargs="+", default=[1, 3], help="Qwen-7B layer counts measured")
    p.add_argument("--seven-b-paths", nargs="*", default=["gguf-q4_k_m", "bfloat16"],
                   help="paths whose verification cost is measured at Qwen-7B widths (none: skip part 2)")
    p.add_argument("--workdir", default="/tmp/llm_compare_bench_seven_b")
    p.add_argument("--markdown", help="also write the tables to this docs page")
    p.add_argument("--prepare", action="store_true", help="only build the Qwen-7B checkpoints and exports")
    p.add_argument("--part1-from", help="part 1's results saved by an earlier run (JSON): measure part 2 only")
    p.add_argument("--child", nargs=2, metavar=("DIR", "PATH"), help=argparse.SUPPRESS)
    global ARGS
    args = ARGS = p.parse_args()
    if args.child:
        return child(*args.child)
    os.environ.setdefault("LLM_COMPARE_CACHE", str(Path(args.workdir) / "cache"))  # children inherit it
    if args.prepare:
        return seven_b_dirs(args) and None
    header("prompt lookup: decode speed with and without drafts")
    heading = run_heading()
    print(heading, flush=True)
    saved = Path(args.workdir) / "drafts_part1.json"
    if args.part1_from:
        results = {path: {(m, q == "quoting"): pairs for m, q, pairs in runs}
                   for path, runs in json.loads(Path(args.part1_from).read_text()).items()}
    else:
        results = smollm2(args, Trace())
        saved.write_text(json.dumps({path: [(m, "quoting" if q else "others", pairs) for (m, q), pairs in runs.items()]
                                     for path, runs in results.items()}))
        say(f"(part 1 saved to {saved}; `--part1-from {saved}` re-measures part 2 only)")
    smollm2_table(results, args)
    if args.seven_b_paths:
        seven_b_table(seven_b_costs(args), results)
    say(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.markdown:
        write_tables(args.markdown, __file__, heading, LINES, "Prompt-lookup drafts")


if __name__ == "__main__":
    main()
