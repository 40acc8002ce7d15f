"""Ask both models one prompt and print both replies with their metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm_compare.commands.common import (
    add_generation_args,
    add_model_args,
    explicit_fields,
    params_from_args,
    specs_from_args,
)
from llm_compare.engine import Job, stream_pair
from llm_compare.errors import UserError
from llm_compare.pool import ModelPool


def configure(p):
    p.add_argument("prompt", nargs="?", help="the question to send to both models; - reads it from standard input")
    p.add_argument("--prompt-file", metavar="PATH",
                   help="read the question from this UTF-8 text file (for prompts longer than a command line takes)")
    p.add_argument("--system", help="system prompt for both sides")
    p.add_argument("--sequential", action="store_true", help="fair timing: run B after A instead of at once")
    p.add_argument(
        "--one-model-at-a-time",
        action="store_true",
        help="for models that do not fit in RAM together: load A, answer, swap to B (implies --sequential)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per side")
    add_model_args(p)
    add_generation_args(p)


def messages_for(prompt: str, system: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": prompt}]


def side_record(spec, state, job=None) -> dict:
    backend = job.backend if job else None
    m = state.metrics
    return {
        "side": state.side,
        "model": spec.name,
        "label": spec.label,
        "text": state.text,
        "new_tokens": m.new_tokens,
        "ttft_s": m.ttft_s,
        "tokens_per_s": m.tokens_per_s,
        "elapsed_s": m.elapsed_s,
        "prompt_tokens": m.prompt_tokens,
        "peak_rss_bytes": m.peak_rss_bytes,
        "finish_reason": state.finish_reason,
        "error": state.error,
        "load_s": getattr(backend, "load_seconds", None),
        "resident_bytes": getattr(backend, "resident_bytes", None),
        "params": state.params.to_dict() if state.params else None,
        "swap_s": state.load_s,
    }


def format_metrics(m) -> str:
    parts = []
    if m.ttft_s is not None:
        parts.append(f"first token {m.ttft_s:.2f} s")
    parts.append(f"{m.new_tokens} tokens")
    if m.tokens_per_s:
        parts.append(f"{m.tokens_per_s:.1f} tok/s")
    parts.append(f"total {m.elapsed_s:.2f} s")
    parts.append(f"peak memory {m.peak_rss_bytes / 2**30:.2f} GiB")
    return " · ".join(parts)


def read_prompt(args) -> str:
    """The prompt from the argument, standard input (`-`) or --prompt-file; one final newline dropped."""
    how = "pass the question as the first argument, - to read standard input, or --prompt-file PATH"
    if args.prompt is not None and args.prompt_file:
        raise UserError(f"the prompt was given twice (an argument and --prompt-file); {how}")
    if args.prompt_file:
        where = f"--prompt-file {args.prompt_file}"
        try:
            data = Path(args.prompt_file).expanduser().read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {where}: {e.strerror or e}; pass an existing text file") from None
    elif args.prompt == "-":
        where, data = "standard input", sys.stdin.buffer.read()
    elif args.prompt is None:
        raise UserError(f"no prompt; {how}")
    else:
        return args.prompt
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text; save it as UTF-8") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def run(args) -> int:
    args.prompt = read_prompt(args)
    if not args.prompt.strip():
        raise UserError("the prompt is empty; pass the question as the first argument, - for standard input, "
                        "or --prompt-file PATH")
    params = params_from_args(args)
    spec_a, spec_b, _ = specs_from_args(args)
    one_at_a_time = args.one_model_at_a_time
    sequential = args.sequential or one_at_a_time
    pool = ModelPool(max_resident=1 if one_at_a_time else None)
    jobs = []
    for side, spec in (("a", spec_a), ("b", spec_b)):
        job = Job(side, None, messages_for(args.prompt, args.system), label=spec.label, explicit=explicit_fields(args))
        if one_at_a_time:
            job.load = lambda spec=spec: pool.get(spec)  # loaded (and the other unloaded) when its turn comes
        else:
            if sys.stderr.isatty():
                print(f"loading {side.upper()}: {spec.label} …", file=sys.stderr)
            job.backend = pool.get(spec)
            job.backend.concurrent_streams = 1 if sequential else 2
        jobs.append(job)
    live = sys.stderr.isatty() and not args.json
    final = None
    for final in stream_pair(jobs[0], jobs[1], params, sequential=sequential):
        if live:
            a, b = final.a.metrics, final.b.metrics
            print(f"\rA {a.new_tokens:4d} tok {a.elapsed_s:6.1f} s | B {b.new_tokens:4d} tok {b.elapsed_s:6.1f} s",
                  end="", file=sys.stderr, flush=True)
    if live:
        print(file=sys.stderr)
    states = [(spec_a, final.a), (spec_b, final.b)]
    for (spec, st), job in zip(states, jobs):
        if args.json:
            print(json.dumps(side_record(spec, st, job), ensure_ascii=False))
        else:
            print(f"== {st.side.upper()}: {spec.label} ==")
            print(st.text if not st.error else f"[error] {st.error}")
            print(f"-- {format_metrics(st.metrics)}")
            if job.backend is not None:
                swap = f" (waited {st.load_s:.1f} s for the swap)" if st.load_s is not None else ""
                print(f"-- loaded in {job.backend.load_seconds:.1f} s, "
                      f"+{job.backend.resident_bytes / 2**20:.0f} MiB resident{swap}")
            print()
    errors = [f"side {st.side.upper()} ({spec.label}): {st.error}" for spec, st in states if st.error]
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if errors else 0
