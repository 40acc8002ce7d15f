"""Export voted battles as JSONL (FastChat clean-battle records) or CSV (spreadsheets).

CSV cells are opened by spreadsheet programs, which run a cell starting with = + - @ (or a tab or
carriage return before one) as a formula: prompts and answers are untrusted text, so such a cell
gets a leading single quote (OWASP's CSV-injection advice). JSONL is for programs: byte-exact.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.store import open_store

CSV_FIELDS = ("battle_id", "question_id", "time_utc", "tstamp", "model_a", "model_b", "winner", "outcome",
              "anony", "self_identified", "self_words", "language", "turn", "source", "judge",
              "prompt", "answer_a", "answer_b", "finish_reason_a", "finish_reason_b")  # "stopped": a partial answer


def configure(p):
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default, arena tooling) or csv")
    p.add_argument("--out", help="file to write (default: standard output)")
    p.add_argument("--db", help="vote database (default: $LLM_COMPARE_DB or ./data/llm_compare.db)")
    p.add_argument("--blind-only", action="store_true", help="only blind battles whose answers did not name a model")


def last_text(conversation: list, role: str) -> str:
    for m in reversed(conversation):
        if m.get("role") == role:
            return m.get("content") or ""
    return ""


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A text cell a spreadsheet shows as text: formula-like starts get a leading single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(r: dict) -> dict:
    row = {k: r.get(k) for k in CSV_FIELDS}
    row["time_utc"] = datetime.fromtimestamp(r["tstamp"], timezone.utc).isoformat(timespec="seconds")
    row["self_words"] = " ".join(r["self_words"])
    row["prompt"] = last_text(r["conversation_a"], "user")
    row["answer_a"] = last_text(r["conversation_a"], "assistant")
    row["answer_b"] = last_text(r["conversation_b"], "assistant")
    return {k: spreadsheet_safe(v) for k, v in row.items()}


def render(records: list[dict], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in records:
        writer.writerow(csv_row(r))
    return buf.getvalue()


def run(args) -> int:
    with open_store(args.db, must_exist=True) as store:
        records = store.clean_battles(blind_only=args.blind_only)
    text = render(records, args.format)
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    try:
        # utf-8-sig for CSV so spreadsheet programs read Chinese text correctly
        out.write_text(text, encoding="utf-8-sig" if args.format == "csv" else "utf-8", newline="")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}; pass --out with a writable path") from None
    print(f"wrote {len(records)} voted battles to {out}", file=sys.stderr)
    return 0
