"""The leaderboard tab's table and ratings plot, from votes in a real SQLite store."""

from __future__ import annotations

import re

from llm_compare.store import VoteStore
from llm_compare.ui import board


def stored_votes(path, outcomes):
    store = VoteStore(path)
    for model_a, model_b, outcome, anony in outcomes:
        bid = store.record_battle(prompt="Q?", model_a=model_a, model_b=model_b, answer_a="x", answer_b="y",
                                  anony=anony, versions={})
        store.record_vote(bid, outcome)
    return store


def test_table_and_plot_rank_the_winner_first_with_intervals(tmp_path):
    store = stored_votes(tmp_path / "v.db", [("good", "bad", "a", True)] * 4 + [("bad", "good", "b", True)] * 3
                         + [("good", "bad", "b", False)])
    blind = board.compute(store, blind_only=True)
    rows = board.table_rows(blind, labels={"good": "Good <model>"})
    assert [r[1] for r in rows] == ["Good <model>", "bad"] and rows[0][5] == 7 and rows[0][6] == "7 / 0 / 0"
    low, high = map(float, re.findall(r"\d+", rows[0][3]))
    assert low <= rows[0][2] <= high and rows[0][2] > 1000 > rows[1][2]
    svg = board.plot_svg(blind, labels={"good": "Good <model>"})
    assert svg.count("<circle") == 2 and "Good &lt;model&gt;" in svg and "<model>" not in svg
    everything = board.compute(store, blind_only=False)
    assert everything.board.battles == 8 and blind.board.battles == 7
    assert "8" in board.summary(everything, False, store.counts())
    store.close()


def test_empty_board_says_so(tmp_path):
    store = VoteStore(tmp_path / "empty.db")
    lb = board.compute(store, blind_only=True)
    assert board.table_rows(lb) == [] and "No rated battles" in board.plot_svg(lb)
    store.close()
