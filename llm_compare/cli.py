"""`python -m llm_compare COMMAND`: a thin layer over the library.

Each command lives in `llm_compare/commands/NAME.py` with `configure(parser)` and `run(args) -> int`.
A `UserError` anywhere becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from llm_compare.commands import arch, ask, doctor, export, fidelity, judge, leaderboard, models, report
from llm_compare.errors import UserError

COMMANDS = {"ask": ask, "models": models, "doctor": doctor, "report": report, "export": export,
            "leaderboard": leaderboard, "judge": judge, "arch": arch, "fidelity": fidelity}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_compare", description="Compare two chat models on CPU.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        p = sub.add_parser(name, help=doc, description=doc)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        quiet_libraries()
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """Progress bars and advisory warnings from transformers would bury the answers."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
