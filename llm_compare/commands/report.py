"""Run a prompt suite through two models and write report.md + report.html (stored for voting)."""

from __future__ import annotations

import random
import sys

from llm_compare.commands.flags import add_generation_args, add_model_args, settings_from_args, specs_from_args
from llm_compare.commands.judge import judge_spec, line_progress
from llm_compare.errors import UserError
from llm_compare.fidelity import answers_fidelity
from llm_compare.pool import ModelPool
from llm_compare.presets import load_suite
from llm_compare.report import check_out_dir, progress_bar, run_suite, write_report
from llm_compare.report_verdict import judge_report, verdict_status
from llm_compare.store import open_store
from llm_compare.turn import messages_for


def configure(p):
    p.add_argument("--prompts", default="seeds",
                   help="a group in assets/presets.toml (default: seeds, the five original questions) or a preset TOML file")
    p.add_argument("--presets", help="preset file to look the group up in (default: assets/presets.toml)")
    p.add_argument("--out", default="report", help="directory for report.md and report.html (default: ./report)")
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--no-store", action="store_true", help="do not store the answers as battles to vote on")
    p.add_argument("--system", help="system prompt for both models")
    p.add_argument("--judge", metavar="MODEL",
                   help="then let this judge model vote on the stored battles and add its verdict to the report "
                        "(registry name, model directory, .gguf file or OpenAI-compatible server URL)")
    p.add_argument("--no-fidelity", action="store_true",
                   help="skip the token-fidelity section (B against A over A's answers; needs one tokenizer)")
    add_model_args(p)
    add_generation_args(p)


def writable_store(flag):
    """The vote database, refused before any model loads when the answers could not be stored there."""
    store = open_store(flag, note_readonly=False)
    if store.readonly:
        store.close()
        raise UserError(f"{store.readonly_note()}; pass --no-store to run the report without storing the answers, "
                        "or --db with a writable path")
    return store


def add_fidelity(report, pool, system) -> None:
    """The report's token-fidelity section: B teacher-forced over A's answers (skipped with a reason)."""
    print("token fidelity: B reads A's answers …", file=sys.stderr)
    answers = [(r.preset.label, messages_for(r.preset.text, system), r.a.text) for r in report.results if not r.a.error]
    report.fidelity, report.fidelity_skipped = answers_fidelity(pool.get(report.spec_a), pool.get(report.spec_b),
                                                                answers)


def run(args) -> int:
    suite, presets = load_suite(args.prompts, args.presets)
    params, user_set = settings_from_args(args)
    spec_a, spec_b, _ = specs_from_args(args)
    check_out_dir(args.out)  # before an hour of generation, not after
    if args.judge and args.no_store:
        raise UserError("--judge votes on the stored battles: drop --no-store, or judge later with `judge --judge MODEL`")
    judge = judge_spec(args.judge, args.registry) if args.judge else None  # a bad name fails before generation
    store = None if args.no_store else writable_store(args.db)  # refuse a bad database before any model loads
    pool = ModelPool()
    try:
        print(f"{len(presets)} prompts from {suite!r}: A {spec_a.label} vs B {spec_b.label} (loading models …)",
              file=sys.stderr)
        report = run_suite(presets, spec_a, spec_b, params, pool, suite=suite, store=store,
                           system=args.system, progress=progress_bar(),
                           rng=random.Random(args.seed) if args.seed is not None else None,
                           recommended=True, user_set=user_set)
        if report.results and not args.no_fidelity:
            add_fidelity(report, pool, args.system)
        if judge is not None and not report.interrupted and store is not None:
            print(f"judging the stored battles with {judge.label} (loading …)", file=sys.stderr)
            run = judge_report(report, store, pool, judge, progress=line_progress())
            print(verdict_status(run), file=sys.stderr)
            report.interrupted = run.interrupted
    finally:
        if store is not None:
            store.close()
    if report.interrupted and not report.results:
        print("interrupted before the first prompt finished: no report written", file=sys.stderr)
        return 130
    md, page = write_report(report, args.out)
    print(f"wrote {md} and {page}", file=sys.stderr)
    ids = [r.battle_id for r in report.results if r.battle_id is not None]
    if ids:
        print(f"stored battles {ids[0]}-{ids[-1]} in {store.path} for blind voting", file=sys.stderr)
    failed = [f"{r.preset.label} ({side.upper()}): {getattr(r, side).error}"
              for r in report.results for side in ("a", "b") if getattr(r, side).error]
    if report.store_error:
        failed.append(f"{report.store_error} (the report files have every answer)")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    if report.interrupted:
        print(f"interrupted: the report has the {len(report.results)} of {report.planned} prompts that finished",
              file=sys.stderr)
        return 130
    return 2 if failed else 0
