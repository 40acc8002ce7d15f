"""One stored battle as the program sees it, and as a FastChat "clean battle" record for exports.

Kept apart from the SQLite code in store.py: what a battle holds, and how it reads back from a row.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}  # FastChat labels


@dataclass
class Battle:
    id: int
    created: float
    prompt: str
    model_a: str
    model_b: str
    answer_a: str
    answer_b: str
    conversation_a: list
    conversation_b: list
    spec_a: dict
    spec_b: dict
    params: dict
    versions: dict
    metrics_a: dict
    metrics_b: dict
    anony: bool
    self_identified: bool
    self_words: list
    source: str
    language: str
    question_id: str | None
    vote: str | None = None  # the outcome, once voted
    voted_at: float | None = None
    voter: str | None = None

    def record(self) -> dict:
        """A FastChat "clean battle" record (arena tooling reads these), plus llm_compare fields."""
        if self.vote is None:
            raise ValueError(f"battle {self.id} has no vote")
        return {
            "question_id": self.question_id or f"llm_compare-{self.id}",
            "model_a": self.model_a,
            "model_b": self.model_b,
            "winner": WINNER[self.vote],
            "judge": self.voter or "anonymous",
            "conversation_a": self.conversation_a,
            "conversation_b": self.conversation_b,
            "turn": sum(1 for m in self.conversation_a if m.get("role") == "user"),
            "anony": self.anony,
            "language": self.language,
            "tstamp": self.voted_at,
            "battle_id": self.id,
            "outcome": self.vote,
            "self_identified": self.self_identified,
            "self_words": self.self_words,
            "source": self.source,
            # how each answer ended: "stop" (the model ended it), "length" (max new tokens), "context"
            # (the model's context was full) or "stopped" (a user stopped it: the answer is partial);
            # None for battles stored without it
            "finish_reason_a": self.metrics_a.get("finish_reason"),
            "finish_reason_b": self.metrics_b.get("finish_reason"),
        }


JSON_COLUMNS = ("conversation_a", "conversation_b", "spec_a", "spec_b", "params", "versions",
                "metrics_a", "metrics_b", "self_words")


def battle_from_row(row: sqlite3.Row) -> Battle:
    data = dict(row)
    for name in JSON_COLUMNS:
        data[name] = json.loads(data[name])
    data["anony"] = bool(data["anony"])
    data["self_identified"] = bool(data["self_identified"])
    return Battle(**data)
