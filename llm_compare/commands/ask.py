"""Ask both models one prompt and print both replies with their metrics."""

from __future__ import annotations

import json
import sys

from llm_compare import progress
from llm_compare.commands.flags import add_generation_args, add_model_args, settings_from_args, specs_from_args
from llm_compare.engine import Status, require_prompt
from llm_compare.errors import UserError
from llm_compare.pool import ModelPool
from llm_compare.specs import MAX_TEXT_BYTES, read_capped
from llm_compare.turn import prepare_turn


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


def side_record(spec, state, job=None) -> dict:
    backend = job.backend if job else None
    m = state.metrics
    return {
        "side": state.side,
        "model": spec.name,
        "label": spec.label,
        "text": state.text,
        "new_tokens": m.new_tokens,
        "draft_tokens": m.draft_tokens,  # of the new tokens, how many came from verified drafts (prompt lookup)
        "ttft_s": m.ttft_s,
        "tokens_per_s": m.tokens_per_s,
        "elapsed_s": m.elapsed_s,
        "prompt_tokens": m.prompt_tokens,
        "reused_tokens": m.reused_tokens,  # of prompt_tokens, kept from the model's KV cache
        "peak_rss_bytes": m.peak_rss_bytes,
        "finish_reason": state.finish_reason,
        "error": state.error,
        "threads": m.threads,
        "load_s": getattr(backend, "load_seconds", None),  # how long loading the model took
        "resident_bytes": getattr(backend, "resident_bytes", None),
        "params": state.params.to_dict() if state.params else None,
        "model_wait_s": state.model_wait_s,  # how long this side waited for its model (load or swap)
        "dtype": getattr(getattr(backend, "spec", None), "dtype", None),
        "dtype_choice": getattr(backend, "dtype_choice", "") or None,  # why, when dtype "auto" chose it
    }


def say(text: str) -> None:
    """A progress line on an interactive terminal (nothing when piped)."""
    if sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def progress_cell(st) -> str:
    """One side on the live terminal line: tokens and time, or what its model load is doing."""
    m = st.metrics
    if st.status == Status.LOADING:
        return f"{st.side.upper()} {m.elapsed_s:6.1f} s {st.activity or 'loading'}"[:48]
    return f"{st.side.upper()} {m.new_tokens:4d} tok {m.elapsed_s:6.1f} s"


def format_metrics(m) -> str:
    parts = []
    if m.ttft_s is not None:
        parts.append(f"first token {m.ttft_s:.2f} s")
    parts.append(f"{m.new_tokens} tokens" + (f" ({m.draft_tokens} from drafts)" if m.draft_tokens else ""))
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
        data = read_capped(args.prompt_file, MAX_TEXT_BYTES, where, "pass an existing text file of a prompt")
    elif args.prompt == "-":
        where = "standard input"
        data = read_capped(sys.stdin.buffer, MAX_TEXT_BYTES, where, "send a prompt, not a whole file system")
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
    require_prompt(args.prompt)  # before any model loads
    params, user_set = settings_from_args(args)
    spec_a, spec_b, _ = specs_from_args(args)
    pool = ModelPool(max_resident=1 if args.one_model_at_a_time else None)
    if not args.one_model_at_a_time:  # load both first: a model that cannot load ends the command with its message
        for side, spec in (("a", spec_a), ("b", spec_b)):
            with progress.reporting(lambda text, side=side: say(f"{side.upper()}: {text}")):
                pool.get(spec)
    turn = prepare_turn(args.prompt, {"a": spec_a, "b": spec_b}, pool, params, user_set=user_set,
                        system=args.system, sequential=args.sequential)
    jobs = [turn.a, turn.b]
    live = sys.stderr.isatty() and not args.json
    final = None
    for final in turn.stream():
        if live:
            print("\r" + " | ".join(progress_cell(st) for st in (final.a, final.b)).ljust(100)[:100],
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
                swap = f" (waited {st.model_wait_s:.1f} s for it)" if st.model_wait_s is not None else ""
                print(f"-- loaded in {job.backend.load_seconds:.1f} s, "
                      f"+{job.backend.resident_bytes / 2**20:.0f} MiB resident{swap}")
                if job.backend.dtype_choice:
                    print(f"-- {job.backend.dtype_choice}")
            print()
    errors = [f"side {st.side.upper()} ({spec.label}): {st.error}" for spec, st in states if st.error]
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if errors else 0
