"""What the vote database holds, read back: battles with their human vote, judges' verdicts, counts.

`BattleQueries` is the reading half of `store.VoteStore` (whose connection, lock and path it uses);
a judge model's vote is told from a person's by its voter name (`JUDGE_PREFIX`).
"""

from __future__ import annotations

import sqlite3

from llm_compare.battle import Battle, battle_from_row
from llm_compare.errors import UserError

JUDGE_PREFIX = "judge:"  # a vote whose voter starts so came from a judge model, not a person
HUMAN_VOTE = "substr(COALESCE(votes.voter, ''), 1, 6) != 'judge:'"
SELECT_VOTED = """
    SELECT battles.*, votes.outcome AS vote, votes.created AS voted_at, votes.voter AS voter
    FROM battles {join} votes ON votes.battle_id = battles.id AND {which}
"""
SELECT_BATTLES = SELECT_VOTED.format(join="LEFT JOIN", which=HUMAN_VOTE)  # with the human vote, if any
SELECT_JUDGED = SELECT_VOTED.format(join="JOIN", which=f"NOT ({HUMAN_VOTE})")  # one row per judge verdict


class BattleQueries:
    """The reads of a store that has `_db` (one sqlite3 connection), `_lock` and `path`."""

    def _query(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise UserError(f"cannot read the vote database {self.path}: {e}") from None

    def get_battle(self, battle_id: int) -> Battle:
        rows = self._query(SELECT_BATTLES + " WHERE battles.id = ?", (battle_id,))
        if not rows:
            raise UserError(f"there is no battle {battle_id} in {self.path}")
        return battle_from_row(rows[0])

    def battles(self, *, voted: bool | None = None, anony: bool | None = None, source: str | None = None,
                limit: int | None = None, newest_first: bool = False) -> list[Battle]:
        """Battles filtered by vote state, blind flag and source, oldest first unless asked."""
        where, args = [], []
        if voted is not None:
            where.append("votes.id IS NOT NULL" if voted else "votes.id IS NULL")
        if anony is not None:
            where.append("battles.anony = ?")
            args.append(int(anony))
        if source is not None:
            where.append("battles.source = ?")
            args.append(source)
        sql = SELECT_BATTLES + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY battles.id " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [battle_from_row(r) for r in self._query(sql, args)]

    def unvoted_battles(self, anony: bool | None = None, limit: int | None = 50, source: str | None = None) -> list[Battle]:
        """Battles waiting for a vote, oldest first ("generate now, vote later")."""
        return self.battles(voted=False, anony=anony, source=source, limit=limit)

    def clean_battles(self, blind_only: bool = False) -> list[dict]:
        """Voted battles as FastChat clean-battle records, in vote order (what ratings and export read).

        blind_only keeps anonymous battles whose answers did not name a model or maker.
        """
        records = [b.record() for b in self.battles(voted=True)]
        if blind_only:
            records = [r for r in records if r["anony"] and not r["self_identified"]]
        return sorted(records, key=lambda r: (r["tstamp"], r["battle_id"]))

    def judge_records(self, judge: str | None = None) -> list[dict]:
        """Judge models' verdicts as clean-battle records ("judge": "judge:<name>"), oldest vote first."""
        sql, args = SELECT_JUDGED, ()
        if judge is not None:
            sql, args = sql + " WHERE votes.voter = ?", (JUDGE_PREFIX + judge,)
        records = [battle_from_row(r).record() for r in self._query(sql, args)]
        return sorted(records, key=lambda r: (r["tstamp"], r["battle_id"]))

    def judged_ids(self, judge: str) -> set[int]:
        """Battles this judge has already given a verdict on (a resumed run skips them)."""
        rows = self._query("SELECT battle_id FROM votes WHERE voter = ?", (JUDGE_PREFIX + judge,))
        return {r[0] for r in rows}

    def judges(self) -> list[str]:
        """Names of the judge models with stored verdicts."""
        rows = self._query(f"SELECT DISTINCT voter FROM votes WHERE NOT ({HUMAN_VOTE}) ORDER BY voter")
        return [r[0][len(JUDGE_PREFIX):] for r in rows]

    def counts(self) -> dict:
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM battles) AS battles, "
            f"(SELECT COUNT(*) FROM votes WHERE {HUMAN_VOTE}) AS votes"
        )[0]
        return {"battles": row["battles"], "votes": row["votes"], "unvoted": row["battles"] - row["votes"]}

    def integrity_check(self) -> str:
        return self._query("PRAGMA integrity_check")[0][0]
