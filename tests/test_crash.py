"""Durability: a vote is on disk once record_vote returns, even if the process is SIGKILLed next."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llm_compare.store import VoteStore

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys
from llm_compare.store import VoteStore
store = VoteStore(sys.argv[1])
n = 0
while True:
    bid = store.record_battle(prompt=f"prompt {n}", model_a="x", model_b="y", answer_a="a" * 500, answer_b="b" * 500,
                              anony=True, versions={})
    vid = store.record_vote(bid, ("a", "b", "tie", "bothbad")[n % 4])
    print(bid, vid, flush=True)
    n += 1
"""


def run_and_kill(db: Path, after: int) -> list[tuple[int, int]]:
    """Start a writer, read `after` acknowledged votes, SIGKILL it mid-stream; return what it printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(tuple(map(int, line.split())))
            if len(acked) >= after:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    acked += [tuple(map(int, line.split())) for line in rest.splitlines() if len(line.split()) == 2]
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.parametrize("after", [1, 25, 60])
def test_every_acknowledged_vote_survives_sigkill(tmp_path, after):
    db = tmp_path / "votes.db"
    acked = run_and_kill(db, after)
    assert len(acked) >= after
    with VoteStore(db) as store:
        assert store.integrity_check() == "ok"
        for bid, vid in acked:
            battle = store.get_battle(bid)
            assert battle.vote is not None
        stored_votes = {r[0] for r in store._db.execute("SELECT id FROM votes")}
        assert {vid for _, vid in acked} <= stored_votes
        # a battle written in the instant of the kill is either complete or absent, never half
        for b in store.battles():
            assert b.answer_a == "a" * 500 and b.answer_b == "b" * 500
        new = store.record_battle(prompt="after the crash", model_a="x", model_b="y", answer_a="1", answer_b="2")
        store.record_vote(new, "tie")  # the database keeps working
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_killed_twice_in_a_row_keeps_everything(tmp_path):
    db = tmp_path / "votes.db"
    first = run_and_kill(db, 10)
    second = run_and_kill(db, 10)
    with VoteStore(db) as store:
        ids = {r[0] for r in store._db.execute("SELECT id FROM votes")}
        assert {v for _, v in first + second} <= ids
        assert store.integrity_check() == "ok"
