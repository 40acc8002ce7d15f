"""Let a judge model vote on stored battles: both answer orders, verdicts stored apart from human votes."""

from __future__ import annotations

import sys
from collections import Counter

from llm_compare.errors import UserError
from llm_compare.judge import pick_battles, run_judge
from llm_compare.judge_local import make_judge
from llm_compare.pool import ModelPool
from llm_compare.specs import DTYPES, load_registry
from llm_compare.store import open_store


def configure(p):
    p.add_argument("--judge", required=True,
                   help="the judge: registry name, model directory, .gguf file or OpenAI-compatible server URL")
    p.add_argument("--battles", choices=("unvoted", "all"), default="unvoted",
                   help="battles without a human vote (default) or every stored battle")
    p.add_argument("--limit", type=int, help="judge at most this many battles in this run")
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--registry", help="registry TOML file (default: assets/models.toml)")
    p.add_argument("--dtype", choices=DTYPES, help="override the judge's precision")
    p.add_argument("--decode", action="store_true",
                   help="a local judge writes its verdict (slower) instead of it being read from next-token probabilities")
    p.add_argument("--timeout", type=float, help="server judge: seconds to wait for a reply (default: the registry's, 60)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow running Python code shipped in the judge's model directory (only for authors you trust)")


def judge_spec(name: str, registry=None, dtype=None, timeout=None, trust_remote_code=False):
    """The judge's ModelSpec from a registry name, a path or a URL."""
    spec = load_registry(registry).resolve(name)
    return spec.with_overrides(dtype=dtype, timeout_s=timeout, trust_remote_code=True if trust_remote_code else None)


def line_progress(stream=None):
    """One line per judged battle, with a bar; the error lines say which battle failed and why."""
    stream = stream or sys.stderr

    def show(n: int, total: int, battle, line: str) -> None:
        filled = int(20 * n / total)
        stream.write(f"[{'#' * filled}{'.' * (20 - filled)}] {n}/{total} {line}\n")
        stream.flush()

    return show


def summary(run, judge_name: str) -> str:
    counts = Counter(outcome for _, outcome in run.judged)
    tally = ", ".join(f"{k} {counts[k]}" for k in ("a", "b", "tie") if counts[k]) or "none"
    text = f"judge {judge_name}: {len(run.judged)} battles judged ({tally})"
    if run.skipped:
        text += f"; {run.skipped} judged before, skipped"
    if run.errors:
        text += f"; {len(run.errors)} failed (see the error lines; a new run retries them)"
    if run.interrupted:
        text += f"; interrupted after {len(run.judged) + len(run.errors)} of {run.planned} (run again to resume)"
    return text


def run(args) -> int:
    spec = judge_spec(args.judge, args.registry, args.dtype, args.timeout, args.trust_remote_code)
    with open_store(args.db, must_exist=True, note_readonly=False) as store:
        if store.readonly:
            raise UserError(f"{store.readonly_note()}; the judge's verdicts are stored as votes: pass --db with a writable copy")
        battles, skipped = pick_battles(store, spec.name, args.battles, args.limit)
        if not battles:
            print(f"nothing to judge: {skipped} battles already judged by {spec.name}" if skipped
                  else "no stored battles to judge; run a report first", file=sys.stderr)
            return 0
        print(f"judging {len(battles)} battles with {spec.label} (loading …)", file=sys.stderr)
        backend = ModelPool().get(spec)  # dtype "auto" resolved and the memory checked, as for the sides
        try:
            judge = make_judge(backend, decode=args.decode)
            result = run_judge(store, judge, battles, skipped=skipped, progress=line_progress())
        finally:
            backend.close()
    print(summary(result, spec.name), file=sys.stderr)
    return 130 if result.interrupted else 2 if result.errors else 0
