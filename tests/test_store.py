"""The vote database: schema migrations, one vote per battle, refusals, blind flags, presets."""

import hashlib
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from llm_compare import migrations
from llm_compare.arena import detect_language, draw_blind_pair, self_mentions
from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.presets import load_presets, load_suite
from llm_compare.specs import ModelSpec
from llm_compare.store import DB_ENV, VoteStore, db_path, open_store


def add_battle(store, answer_a="Paris.", answer_b="It is Paris.", **kw):
    fields = dict(prompt="Capital of France?", model_a="m1", model_b="m2", answer_a=answer_a, answer_b=answer_b)
    fields.update(kw)
    return store.record_battle(**fields)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path):
    with VoteStore(tmp_path / "votes.db") as s:
        yield s


def test_battle_round_trip_keeps_every_field(store):
    spec = ModelSpec(name="m1", source="embedded:smollm2", dtype="float32", backend="llamacpp")
    bid = add_battle(
        store, spec_a=spec, spec_b={"name": "m2", "dtype": "bfloat16"}, params=GenerationParams(seed=3),
        metrics_a={"ttft_s": 0.5, "new_tokens": 7}, anony=True, source="batch", question_id="seeds/1",
    )
    b = store.get_battle(bid)
    assert (b.model_a, b.model_b, b.answer_a, b.answer_b) == ("m1", "m2", "Paris.", "It is Paris.")
    assert b.spec_a["dtype"] == "float32" and b.spec_a["backend"] == "llamacpp"
    assert b.spec_b["dtype"] == "bfloat16"
    assert b.params["seed"] == 3 and b.metrics_a["new_tokens"] == 7
    assert b.conversation_a == [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    assert b.anony and b.source == "batch" and b.question_id == "seeds/1" and b.vote is None
    assert "python" in b.versions and "sqlite" in b.versions
    assert b.language == "English"


def test_one_vote_per_battle_and_refusals(store):
    bid = add_battle(store)
    vid = store.record_vote(bid, "bothbad", voter="ann")
    assert vid >= 1 and store.get_battle(bid).vote == "bothbad"
    with pytest.raises(UserError, match="already has a vote"):
        store.record_vote(bid, "a")
    with pytest.raises(UserError, match="no battle 999"):
        store.record_vote(999, "a")
    with pytest.raises(UserError, match="unknown vote 'left'"):
        store.record_vote(bid, "left")
    assert store.counts() == {"battles": 1, "votes": 1, "unvoted": 0}
    assert store.get_battle(bid).voter == "ann"


def test_database_refuses_second_vote_even_without_the_check(store):
    bid = add_battle(store)
    store.record_vote(bid, "a")
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("INSERT INTO votes (battle_id, outcome, created) VALUES (?, 'b', 0)", (bid,))


def test_unvoted_queue_and_clean_battles(store):
    ids = [add_battle(store, anony=(i % 2 == 0)) for i in range(4)]
    leak = add_battle(store, answer_a="我是通义千问，由阿里云开发。", anony=True)
    assert [b.id for b in store.unvoted_battles()] == ids + [leak]
    assert [b.id for b in store.unvoted_battles(anony=True)] == [ids[0], ids[2], leak]
    assert [b.id for b in store.unvoted_battles(limit=2)] == ids[:2]
    for bid, outcome in zip(ids + [leak], ["a", "b", "tie", "bothbad", "a"]):
        store.record_vote(bid, outcome)
    assert store.unvoted_battles() == []
    records = store.clean_battles()
    assert [r["winner"] for r in records] == ["model_a", "model_b", "tie", "tie (bothbad)", "model_a"]
    assert store.get_battle(leak).self_identified and store.get_battle(leak).self_words == ["通义千问", "阿里云"]
    blind = store.clean_battles(blind_only=True)
    assert [r["battle_id"] for r in blind] == [ids[0], ids[2]]  # anonymous and no self-mention


# The database the first release wrote, by hand (as it shipped), not through today's migration code.
FIRST_RELEASE_SCHEMA = """
CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL);
INSERT INTO _migrations VALUES ('m001_battles_and_votes', 1700000000.0);
CREATE TABLE battles (
    id INTEGER PRIMARY KEY, created REAL NOT NULL, prompt TEXT NOT NULL,
    conversation_a TEXT NOT NULL, conversation_b TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL,
    spec_a TEXT NOT NULL, spec_b TEXT NOT NULL, params TEXT NOT NULL, versions TEXT NOT NULL,
    answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, metrics_a TEXT NOT NULL, metrics_b TEXT NOT NULL,
    anony INTEGER NOT NULL DEFAULT 0, self_identified INTEGER NOT NULL DEFAULT 0,
    self_words TEXT NOT NULL DEFAULT '[]', source TEXT NOT NULL CHECK (source IN ('live', 'batch'))
);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY, battle_id INTEGER NOT NULL REFERENCES battles(id),
    outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'bothbad')), created REAL NOT NULL, voter TEXT
);
"""


def _columns(db, table) -> list[tuple]:
    return [tuple(row[1:]) for row in db.execute(f"PRAGMA table_info({table})")]


def first_release_db(path):
    """A database as the first release wrote it: one battle with one vote."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(FIRST_RELEASE_SCHEMA)
    db.execute(
        "INSERT INTO battles (created, prompt, conversation_a, conversation_b, model_a, model_b, spec_a, spec_b,"
        " params, versions, answer_a, answer_b, metrics_a, metrics_b, source)"
        " VALUES (1, 'old prompt', '[]', '[]', 'x', 'y', '{}', '{}', '{}', '{}', 'A', 'B', '{}', '{}', 'live')"
    )
    db.execute("INSERT INTO votes (battle_id, outcome, created) VALUES (1, 'a', 2)")
    db.close()
    return path


def test_migrations_build_empty_db_and_upgrade_an_older_one(tmp_path):
    path = first_release_db(tmp_path / "old.db")
    with VoteStore(path) as s:
        names = {r[0] for r in s._db.execute("SELECT name FROM _migrations")}
        assert names == {fn.__name__ for fn in migrations.MIGRATIONS}
        old = s.get_battle(1)
        assert old.prompt == "old prompt" and old.vote == "a" and old.language == ""
        with pytest.raises(UserError, match="already has a vote"):
            s.record_vote(1, "b")  # the index added by a later migration holds for old rows too
    with VoteStore(path) as s:  # reopening applies nothing twice
        assert s._db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(migrations.MIGRATIONS)
        with VoteStore(tmp_path / "new.db") as fresh:  # an empty database ends with the same schema
            for table in ("battles", "votes"):
                assert _columns(fresh._db, table) == _columns(s._db, table)
            indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"
            assert fresh._db.execute(indexes).fetchall() == s._db.execute(indexes).fetchall()


def test_not_a_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not SQLite " * 200)
    before = digest(path)
    with pytest.raises(UserError, match="not a vote database or is damaged.*left untouched"):
        VoteStore(path)
    assert digest(path) == before


def test_damaged_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "v.db"
    with VoteStore(path) as s:
        add_battle(s)
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(4096 - 100)  # wreck the first page's schema area
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(UserError, match=str(path)):
        s = VoteStore(path)
        s.clean_battles()
    assert digest(path) == before


def test_foreign_sqlite_database_is_not_changed(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(UserError, match="another program"):
        VoteStore(path)
    assert digest(path) == before


def test_missing_directory_and_directory_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        VoteStore(tmp_path / "nope" / "v.db")
    with pytest.raises(UserError, match="is a directory"):
        VoteStore(tmp_path)
    s = VoteStore(tmp_path / "made" / "v.db", create_dir=True)
    assert (tmp_path / "made" / "v.db").exists()
    s.close()


def test_readonly_store_reads_and_refuses_writes_without_changing_the_file(tmp_path):
    path = tmp_path / "v.db"
    with VoteStore(path) as s:
        bid = add_battle(s)
        s.record_vote(bid, "a")
    before = digest(path)
    with VoteStore(path, readonly=True) as ro:
        assert len(ro.clean_battles()) == 1
        with pytest.raises(UserError, match="read-only"):
            ro.record_vote(bid, "b")
        with pytest.raises(UserError, match="read-only"):
            add_battle(ro)
    assert digest(path) == before
    with pytest.raises(UserError, match="no vote database"):
        VoteStore(tmp_path / "absent.db", readonly=True)


def test_file_without_write_permission_opens_readonly(tmp_path, monkeypatch):
    path = tmp_path / "v.db"
    with VoteStore(path) as s:
        add_battle(s)
    path.chmod(0o444)
    if os.geteuid() == 0:  # root writes anyway; make the permission check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(path) and mode & os.W_OK else real(p, mode))
    with VoteStore(path) as s:
        assert s.readonly
        assert len(s.battles()) == 1
        with pytest.raises(UserError, match=r"read-only \(file permissions\)"):
            s.record_vote(1, "a")
    path.chmod(0o644)
    with VoteStore(path) as s:
        assert s.get_battle(1).vote is None


def test_db_path_flag_env_and_default(tmp_path, monkeypatch):
    monkeypatch.delenv(DB_ENV, raising=False)
    assert db_path(None) == (Path("data/llm_compare.db"), True)
    monkeypatch.setenv(DB_ENV, str(tmp_path / "env.db"))
    assert db_path(None) == (tmp_path / "env.db", False)
    assert db_path(str(tmp_path / "flag.db")) == (tmp_path / "flag.db", False)
    with open_store(None) as s:
        assert s.path == tmp_path / "env.db"
    monkeypatch.delenv(DB_ENV)
    monkeypatch.chdir(tmp_path)
    with open_store(None) as s:  # the default location's directory is created on demand
        assert (tmp_path / "data" / "llm_compare.db").exists()


def test_wal_and_full_sync(store):
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_self_mentions_list():
    assert self_mentions("我是智谱AI训练的ChatGLM3。") == ["智谱", "ChatGLM"]
    assert self_mentions("I am SmolLM2, made by Hugging Face.") == ["SmolLM", "Hugging Face"]
    assert self_mentions("I'm QWEN from alibaba") == ["Qwen", "Alibaba"]
    assert self_mentions("我是通义千问") == ["通义千问"]
    assert self_mentions("The glmnet package fits lasso models.") == []
    assert self_mentions("Paris is the capital of France.") == []


def test_blind_pair_is_distinct_and_both_orders_occur():
    rng = random.Random(0)
    pairs = [draw_blind_pair(["x", "y", "z"], rng) for _ in range(200)]
    assert all(a != b for a, b in pairs)
    assert ("x", "y") in pairs and ("y", "x") in pairs
    with pytest.raises(UserError, match="two different models"):
        draw_blind_pair(["x", "x"], rng)


def test_language_guess():
    assert detect_language("他知道我知道你知道他不知道吗？") == "Chinese"
    assert detect_language("Why is the sky blue?") == "English"


def test_presets_file_has_the_seeds_word_for_word():
    from conftest import LEGACY_FIXTURES

    # shared/ sits beside the repository here and in CI (conftest finds the fixtures the same way)
    seeds_text = (LEGACY_FIXTURES.parent.parent / "seeds" / "000_5537feb46f03194a.txt").read_text(encoding="utf-8")
    name, seeds = load_suite("seeds")
    assert name == "seeds" and len(seeds) == 5
    for p in seeds:
        assert f'prompt = "{p.text}"' in seeds_text
    presets = load_presets()
    assert len(presets) >= 15
    assert {"reasoning", "instructions", "Chinese", "English", "coding"} <= {p.group for p in presets}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "no \\[\\[prompts\\]\\] tables"),
        ("[[prompts]]\ngroup = 'g'\nlabel = 'l'\n", "needs a non-empty string `text`"),
        ("[[prompts]]\ngroup = 'g'\nlabel = 'l'\ntext = 'x'\ncolour = 1\n", "unknown field"),
        ("[[prompts]\n", "not valid TOML"),
    ],
)
def test_malformed_preset_files(tmp_path, content, problem):
    path = tmp_path / "suite.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=problem) as e:
        load_presets(path)
    assert str(path) in str(e.value)
    with pytest.raises(UserError, match="no prompt group 'nosuch'"):
        load_suite("nosuch")


# -- export and leaderboard commands -------------------------------------------------------------

def voted_store(path, n=30, seed=0):
    rng = random.Random(seed)
    with VoteStore(path) as s:
        for i in range(n):
            a, b = rng.sample(["alpha", "beta", "gamma"], 2)
            bid = s.record_battle(prompt=f"问题 {i}, \"quoted\"\nnext line", model_a=a, model_b=b,
                                  answer_a=f"答案 A{i}, with, commas", answer_b=f"answer B{i}\n", anony=i % 4 != 0)
            if i % 7 != 6:  # some battles stay unvoted
                s.record_vote(bid, rng.choice(["a", "b", "tie", "bothbad"]), voter="t")
        return {(b.id, b.vote) for b in s.battles(voted=True)}


def test_export_jsonl_round_trip_in_fastchat_layout(tmp_path):
    from llm_compare.cli import main

    db, out = tmp_path / "v.db", tmp_path / "battles.jsonl"
    votes = voted_store(db)
    assert main(["export", "--db", str(db), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    winner_to_outcome = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "bothbad"}
    assert {(r["battle_id"], winner_to_outcome[r["winner"]]) for r in rows} == votes
    for r in rows:
        assert {"question_id", "model_a", "model_b", "winner", "anony", "tstamp", "conversation_a",
                "conversation_b", "turn", "language"} <= set(r)
        assert [m["role"] for m in r["conversation_a"]] == ["user", "assistant"] and r["turn"] == 1
        assert isinstance(r["anony"], bool) and isinstance(r["tstamp"], float)
    assert [r["tstamp"] for r in rows] == sorted(r["tstamp"] for r in rows)


def test_export_csv_round_trip(tmp_path):
    import csv

    from llm_compare.cli import main

    db, out = tmp_path / "v.db", tmp_path / "battles.csv"
    votes = voted_store(db)
    assert main(["export", "--db", str(db), "--format", "csv", "--out", str(out)]) == 0
    with open(out, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(int(r["battle_id"]), r["outcome"]) for r in rows} == votes
    first = rows[0]
    assert first["prompt"] == '问题 0, "quoted"\nnext line' and first["answer_b"] == "answer B0\n"


def test_leaderboard_command(tmp_path, capsys):
    from llm_compare.cli import main

    db = tmp_path / "v.db"
    voted_store(db, n=40)
    assert main(["leaderboard", "--db", str(db), "--rounds", "100"]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "Elo" in out and "alpha" in out and "blind battles" in out
    assert main(["leaderboard", "--db", str(db), "--all", "--json", "--rounds", "100"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["battles"] == sum(1 for i in range(40) if i % 7 != 6)
    assert {r["model"] for r in board["rows"]} == {"alpha", "beta", "gamma"}


def test_commands_on_a_missing_database_say_so(tmp_path, capsys):
    from llm_compare.cli import main

    assert main(["leaderboard", "--db", str(tmp_path / "none.db")]) == 2
    assert "no vote database" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert main(["export", "--db", str(tmp_path / "none.db")]) == 2


def test_record_pair_from_engine_states(store):
    from llm_compare.arena import record_pair
    from llm_compare.engine import Metrics, SideState

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
               {"role": "user", "content": "Who made you?"}]
    a = SideState("a", "A", text="I am SmolLM, made by Hugging Face.", status="done", finish_reason="stop",
                  metrics=Metrics(ttft_s=0.2, elapsed_s=1.5, new_tokens=9, tokens_per_s=6.0))
    b = SideState("b", "B", text="A language model.", status="done", finish_reason="length",
                  metrics=Metrics(ttft_s=0.3, elapsed_s=2.0, new_tokens=4, tokens_per_s=2.0))
    bid = record_pair(store, ModelSpec(name="left", source="/x"), a, ModelSpec(name="right", source="/y"), b, history,
                      params=GenerationParams(max_new_tokens=9), anony=True)
    got = store.get_battle(bid)
    assert (got.model_a, got.model_b, got.prompt) == ("left", "right", "Who made you?")
    assert got.conversation_a[-1] == {"role": "assistant", "content": a.text} and len(got.conversation_a) == 4
    assert got.metrics_b["finish_reason"] == "length" and got.metrics_a["tokens_per_s"] == 6.0
    assert got.self_identified and got.self_words == ["SmolLM", "Hugging Face"]
    assert store.clean_battles(blind_only=True) == []  # not voted yet
    store.record_vote(bid, "b")
    assert store.clean_battles()[0]["turn"] == 2
    assert store.clean_battles(blind_only=True) == []  # it named itself: out of blind ratings


@pytest.mark.parametrize("argv", [["--help"], ["leaderboard", "--help"], ["export", "--help"], ["report", "--help"]])
def test_help_texts_render(argv, capsys):
    from llm_compare.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_unwritable_directory(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    with VoteStore(locked / "old.db") as s:
        add_battle(s)
    locked.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway; make the permission check see what a user would
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) and mode & os.W_OK else real(p, mode))
        with pytest.raises(UserError, match="directory is not writable"):
            VoteStore(locked / "new.db")
        assert not (locked / "new.db").exists()
        with VoteStore(locked / "old.db") as s:  # an existing database can still be read
            assert s.readonly and len(s.battles()) == 1
            with pytest.raises(UserError, match="its directory .* is not writable"):
                s.record_vote(1, "a")
    finally:
        locked.chmod(0o755)


def test_judge_votes_beside_the_human_vote_on_an_upgraded_database(tmp_path):
    path = first_release_db(tmp_path / "old.db")
    with VoteStore(path) as s:
        s.record_judge_vote(1, "b", "j1", {"as_stored": {"verdict": "B"}})
        s.record_judge_vote(1, "tie", "j2")
        with pytest.raises(UserError, match="already has a vote"):
            s.record_judge_vote(1, "a", "j1")  # one verdict per judge
        with pytest.raises(UserError, match="kept for judge models"):
            s.record_vote(1, "a", voter="judge:me")
        with pytest.raises(sqlite3.IntegrityError):  # the database itself holds one vote per voter kind
            s._db.execute("INSERT INTO votes (battle_id, outcome, created, voter) VALUES (1, 'b', 3, 'judge:j1')")
        assert s.get_battle(1).vote == "a" and s.counts() == {"battles": 1, "votes": 1, "unvoted": 0}
        assert [r["winner"] for r in s.clean_battles()] == ["model_a"]  # the human vote, once
        assert {r["judge"]: r["winner"] for r in s.judge_records()} == {"judge:j1": "model_b", "judge:j2": "tie"}
        assert s.judges() == ["j1", "j2"] and s.judged_ids("j1") == {1} and s.judged_ids("j3") == set()
        assert [b.id for b in s.battles(voted=True)] == [1]  # one row per battle, not one per vote


def test_a_read_only_database_from_before_judge_votes_still_serves_the_board(tmp_path):
    path = tmp_path / "older.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(db, upto="m003_one_vote_per_battle")  # the schema before judge votes
    db.execute("INSERT INTO battles (created, prompt, conversation_a, conversation_b, model_a, model_b, spec_a, spec_b,"
               " params, versions, answer_a, answer_b, metrics_a, metrics_b, source)"
               " VALUES (1, 'p', '[]', '[]', 'x', 'y', '{}', '{}', '{}', '{}', 'A', 'B', '{}', '{}', 'live')")
    db.execute("INSERT INTO votes (battle_id, outcome, created) VALUES (1, 'b', 2)")
    db.close()
    with VoteStore(path, readonly=True) as ro:
        assert [r["winner"] for r in ro.clean_battles()] == ["model_b"]
        assert ro.judge_records() == [] and ro.judges() == []
    with VoteStore(path) as s:  # writable again: upgraded, nothing lost
        assert s.get_battle(1).vote == "b"
        s.record_judge_vote(1, "a", "j")
