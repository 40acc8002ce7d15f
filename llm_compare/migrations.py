"""Named, ordered schema migrations for the vote database.

Each migration is a function registered in order with `@migration`; the `_migrations` table
records the names already applied, so `migrate(db)` builds an empty database from scratch and
upgrades an older one by running only what it lacks. Never edit or reorder a migration that has
shipped: add a new one.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from typing import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
# Migrations a database opened read-only may lack: reading works the same without them (it has no
# judge votes yet), so a read-only copy made by an older version still serves the leaderboard.
READABLE_WITHOUT = {"m004_judge_votes"}


def migration(fn: Callable[[sqlite3.Connection], None]):
    MIGRATIONS.append(fn)
    return fn


@contextmanager
def transaction(db: sqlite3.Connection):
    """One explicit write transaction (the connection is in autocommit mode): all or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def applied(db: sqlite3.Connection) -> set[str]:
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    return {row[0] for row in db.execute("SELECT name FROM _migrations")}


def migrate(db: sqlite3.Connection, upto: str | None = None) -> list[str]:
    """Apply missing migrations in order, each in its own transaction; return the names applied.

    `upto` stops after the named migration (tests use it to build an older database).
    """
    done = applied(db)
    ran = []
    for fn in MIGRATIONS:
        if fn.__name__ not in done:
            with transaction(db):
                fn(db)
                db.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", (fn.__name__, time.time()))
            ran.append(fn.__name__)
        if fn.__name__ == upto:
            break
    return ran


@migration
def m001_battles_and_votes(db):
    # model_a is the model shown on side A (the left pane), model_b on side B (the right pane).
    db.execute(
        """
        CREATE TABLE battles (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,              -- unix time (seconds, UTC)
            prompt TEXT NOT NULL,
            conversation_a TEXT NOT NULL,       -- JSON list of {role, content}, answer included
            conversation_b TEXT NOT NULL,
            model_a TEXT NOT NULL,
            model_b TEXT NOT NULL,
            spec_a TEXT NOT NULL,               -- JSON ModelSpec (dtype, backend, source, ...)
            spec_b TEXT NOT NULL,
            params TEXT NOT NULL,               -- JSON GenerationParams
            versions TEXT NOT NULL,             -- JSON software versions
            answer_a TEXT NOT NULL,
            answer_b TEXT NOT NULL,
            metrics_a TEXT NOT NULL,            -- JSON engine Metrics (+ finish_reason, error)
            metrics_b TEXT NOT NULL,
            anony INTEGER NOT NULL DEFAULT 0,   -- 1: blind battle, names hidden until the vote
            self_identified INTEGER NOT NULL DEFAULT 0,
            self_words TEXT NOT NULL DEFAULT '[]',  -- JSON list of the self-mentions found
            source TEXT NOT NULL CHECK (source IN ('live', 'batch'))
        )
        """
    )
    db.execute(
        """
        CREATE TABLE votes (
            id INTEGER PRIMARY KEY,
            battle_id INTEGER NOT NULL REFERENCES battles(id),
            outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'bothbad')),
            created REAL NOT NULL,
            voter TEXT
        )
        """
    )


@migration
def m002_language_and_question(db):
    db.execute("ALTER TABLE battles ADD COLUMN language TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE battles ADD COLUMN question_id TEXT")  # batch: suite/label


@migration
def m003_one_vote_per_battle(db):
    # The database itself refuses a second vote, also across processes sharing the file.
    db.execute("CREATE UNIQUE INDEX votes_one_per_battle ON votes (battle_id)")
    db.execute("CREATE INDEX battles_created ON battles (created)")


@migration
def m004_judge_votes(db):
    # A battle takes one human vote and one vote from each judge model (voter "judge:<name>");
    # detail keeps a judge's two verdicts (answers in both orders) as JSON.
    db.execute("ALTER TABLE votes ADD COLUMN detail TEXT")
    db.execute("DROP INDEX votes_one_per_battle")
    db.execute(
        "CREATE UNIQUE INDEX votes_one_per_voter_kind ON votes "
        "(battle_id, CASE WHEN substr(voter, 1, 6) = 'judge:' THEN voter ELSE '' END)"
    )
