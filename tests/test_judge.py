"""The judge end to end: a scripted OpenAI-compatible server on loopback, and a tiny local model."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest

from llm_compare.cli import main
from llm_compare.errors import UserError
from llm_compare.judge import combine, judge_messages, parse_verdict, pick_battles, run_judge
from llm_compare.judge_local import ProbabilityJudge, last_position_logits, make_judge
from llm_compare.store import VoteStore
from llm_compare.verdict import agreement, verdict
from openai_server import OpenAIServer

# question -> how the scripted judge answers (it sees which answer comes first)
SCRIPT = {
    "What is the capital of France?": "prefers Paris",
    "Name a prime number.": "always A",  # position bias: the two orders disagree
    "Say something.": "tie",
    "Tell me a secret.": "refuses",
    "Pick one.": "garbage",
    "Count to three.": "slow",
    "法国的首都是哪里？": "prefers Paris",
}


def scripted_reply(question: str | None, user: str) -> str | None:
    rule = SCRIPT.get(question, "prefers the longer answer")
    if rule == "prefers the longer answer":  # any other question (a report's): a consistent verdict
        first, second = re.findall(r"(?:\[Answer of assistant [AB]\]|\[助手 [AB] 的回答\])\n(.*?)\n"
                                   r"(?:\[End of answer [AB]\]|\[回答 [AB] 结束\])", user, re.S)
        return "[[A]]" if len(first) >= len(second) else "[[B]]"
    if rule == "prefers Paris":
        first_is_paris = user.index("Paris") < user.index("Lyon")
        return ("[[A]]" if first_is_paris else "[[B]]") + " The answer naming Paris is right."
    return {"always A": "[[A]] The first one.", "tie": "[[C]] Both fine.", "refuses": "I'm sorry, I can't judge that.",
            "garbage": "[[A]] no, [[B]]", "slow": None}[rule]


def judge_reply(h, body):
    """The scripted judge's answer to one request (a slow one waits until the test ends)."""
    user = body["messages"][-1]["content"]
    question = next((q for q in SCRIPT if q in user), None)
    reply = scripted_reply(question, user)
    if reply is None:
        h.server.release.wait(10)
        reply = "[[A]]"
    h.stream_text(reply)


def JudgeServer() -> OpenAIServer:  # noqa: N802 - a server, as the tests that use it read
    return OpenAIServer(judge_reply, models=["judge-model"])


@pytest.fixture
def judge_server():
    with JudgeServer() as srv:
        yield srv


def add_battle(store, question, answer_a, answer_b, a="m1", b="m2"):
    return store.record_battle(prompt=question, model_a=a, model_b=b, answer_a=answer_a, answer_b=answer_b,
                               anony=True, source="batch", question_id=f"seeds/{question[:8]}")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "votes.db"
    with VoteStore(path) as store:
        ids = {q: add_battle(store, q, "Paris.", "Lyon.") for q in SCRIPT}
        ids["swapped"] = add_battle(store, "What is the capital of France?", "Lyon.", "Paris.", a="m2", b="m1")
    return path, ids


def test_parse_and_combine():
    assert parse_verdict("[[B]] because") == "B" and parse_verdict("verdict: [[ C ]]") == "C"
    assert parse_verdict("I refuse") is None and parse_verdict("[[A]] or [[B]]") is None
    assert combine("A", "B") == "a" and combine("B", "A") == "b" and combine("C", "C") == "tie"
    assert combine("A", "A") == "tie"  # the orders disagree: a tie
    assert "评审" in judge_messages("法国的首都是哪里？", "x", "y")[0]["content"]
    assert "impartial judge" in judge_messages("What?", "x", "y")[0]["content"]


def test_judge_command_end_to_end(judge_server, db, capsys):
    path, ids = db
    code = main(["judge", "--judge", judge_server.url, "--db", str(path), "--timeout", "3"])
    err = capsys.readouterr().err
    assert code == 2  # some battles failed: errors, not the end of the run
    for question in ("Tell me a secret.", "Pick one.", "Count to three."):
        assert f"battle {ids[question]}: error:" in err
    assert "sent nothing for 3 s" in err  # the timeout is named
    with VoteStore(path) as store:
        judged = {r["battle_id"]: r["outcome"] for r in store.judge_records()}
        assert judged == {ids["What is the capital of France?"]: "a", ids["swapped"]: "b",
                          ids["法国的首都是哪里？"]: "a", ids["Name a prime number."]: "tie", ids["Say something."]: "tie"}
        assert store.clean_battles() == [] and store.counts()["votes"] == 0  # no human vote appeared
        assert store.judges() == [judge_server.url]
    chinese = [r for r in judge_server.requests if "法国" in r["messages"][-1]["content"]]
    assert len(chinese) == 2 and all("评审" in r["messages"][0]["content"] for r in chinese)
    orders = [r["messages"][-1]["content"].index("Paris") < r["messages"][-1]["content"].index("Lyon")
              for r in judge_server.requests if "capital of France" in r["messages"][-1]["content"]]
    assert sorted(orders) == [False, False, True, True]  # each battle in both orders
    # a second run skips the judged battles and retries only the failed ones
    judge_server.requests.clear()
    judge_server.release.set()
    assert main(["judge", "--judge", judge_server.url, "--db", str(path), "--timeout", "3"]) == 2
    asked = {next(q for q in SCRIPT if q in r["messages"][-1]["content"]) for r in judge_server.requests}
    assert asked == {"Tell me a secret.", "Pick one.", "Count to three."}  # only the failed battles again
    assert "5 judged before, skipped" in capsys.readouterr().err


def test_judge_votes_stay_apart_and_agreement_uses_battles_with_both(judge_server, db):
    path, ids = db
    main(["judge", "--judge", judge_server.url, "--db", str(path), "--limit", "3", "--timeout", "3"])
    with VoteStore(path) as store:
        store.record_vote(ids["What is the capital of France?"], "a")  # the judge said a too
        store.record_vote(ids["Name a prime number."], "b")  # the judge said tie
        store.record_vote(ids["Tell me a secret."], "a")  # not judged (outside --limit 3)
        records = store.clean_battles() + store.judge_records()
        assert len(store.clean_battles()) == 3 and store.counts() == {"battles": 8, "votes": 3, "unvoted": 5}
    assert agreement(store_human := [r for r in records if r["judge"] == "anonymous"],
                     [r for r in records if r["judge"].startswith("judge:")]) == {
        judge_server.url: {"battles": 2, "agree": 1, "rate": 0.5}}
    human = verdict(records, rounds=100)
    assert human.board.battles == len(store_human) == 3
    assert human.agreement[judge_server.url]["battles"] == 2
    judged = verdict(records, voters=f"judge:{judge_server.url}", rounds=100)
    assert judged.board.battles == 3


def test_pick_battles_unvoted_all_and_limit(db):
    path, ids = db
    with VoteStore(path) as store:
        store.record_vote(ids["Say something."], "a")
        unvoted, skipped = pick_battles(store, "j", "unvoted")
        assert ids["Say something."] not in [b.id for b in unvoted] and skipped == 0
        assert len(pick_battles(store, "j", "all")[0]) == 8
        assert len(pick_battles(store, "j", "all", limit=2)[0]) == 2


@pytest.fixture(scope="module")
def long_context_dir(tmp_path_factory):
    """The tiny random chat model with room for the judge prompt (its default 256 tokens are too few)."""
    from conftest import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-judge"), context=2048)


@pytest.fixture(scope="module")
def long_context_backend(long_context_dir):
    from llm_compare.backends import open_backend
    from llm_compare.specs import ModelSpec

    return open_backend(ModelSpec(name="tiny-judge", source=str(long_context_dir), dtype="float32"))


def test_judge_command_with_a_local_model_stores_its_probabilities(long_context_dir, db, capsys):
    path, _ = db
    assert main(["judge", "--judge", str(long_context_dir), "--dtype", "float32", "--db", str(path),
                 "--limit", "2"]) == 0, capsys.readouterr().err
    assert "2 battles judged" in capsys.readouterr().err
    with VoteStore(path) as store:
        judged = store.battles()[:2]
        rows = store._query("SELECT detail FROM votes WHERE voter LIKE 'judge:%' ORDER BY battle_id")
    details = [json.loads(r[0]) for r in rows]
    assert len(details) == 2 and all(set(d["as_stored"]["probabilities"]) == set("ABC") for d in details)
    assert all(d["swapped"]["verdict"] in "ABC" for d in details) and len(judged) == 2


def test_local_judge_refuses_a_prompt_beyond_its_context(tiny_backend):
    judge = make_judge(tiny_backend)
    with pytest.raises(UserError, match="more than Tiny random's context of 256"):
        judge.verdict(judge_messages("What is the capital of France?", "Paris. " * 40, "Lyon."))


def test_local_judge_reads_next_token_probabilities(long_context_backend, db):
    path, ids = db
    tiny_backend = long_context_backend
    judge = make_judge(tiny_backend)
    assert isinstance(judge, ProbabilityJudge)
    messages = judge_messages("What is the capital of France?", "Paris.", "Lyon.")
    letter, detail = judge.verdict(messages)
    probs = detail["probabilities"]
    assert abs(sum(probs.values()) - 1) < 1e-3 and letter == max(probs, key=probs.get)
    # independent reference: the same model's full forward pass through transformers
    import torch

    ids_ = list(tiny_backend.chat_format.encode(messages)) + tiny_backend.tokenizer.encode("[[", add_special_tokens=False)
    assert judge.prefix == tiny_backend.tokenizer.encode("[[", add_special_tokens=False)
    with torch.inference_mode():
        logits = tiny_backend.model(input_ids=torch.tensor([ids_])).logits[0, -1].float().numpy()
    chosen = logits[[judge.tokens[v] for v in "ABC"]]
    expected = np.exp(chosen - chosen.max()) / np.exp(chosen - chosen.max()).sum()
    assert np.allclose([probs[v] for v in "ABC"], expected, atol=1e-3)
    assert np.allclose(last_position_logits(tiny_backend, ids_), logits, atol=1e-4)
    with VoteStore(path) as store:
        battles, _ = pick_battles(store, judge.name, limit=2)
        run = run_judge(store, judge, battles)
        assert len(run.judged) == 2 and not run.errors
        stored = store.judge_records(judge.name)
        assert [r["battle_id"] for r in stored] == [b.id for b in battles]
        assert all(json.loads(json.dumps(r))["winner"] in ("model_a", "model_b", "tie") for r in stored)


def test_local_gguf_judge_reads_llama_cpp_logits():
    """The llama.cpp path: the verdict probabilities are the softmax of the logits a separate llama.cpp
    instance (logits for every position) gives after the same ids."""
    import llama_cpp

    from llm_compare.backends import open_backend
    from llm_compare.specs import ModelSpec

    backend = open_backend(ModelSpec(name="smol-judge", source="embedded:smollm2", backend="llamacpp"))
    try:
        judge = make_judge(backend)
        messages = judge_messages("What is the capital of France?", "Paris.", "Lyon.")
        letter, detail = judge.verdict(messages)
        ids = list(backend.prompt.encode(messages)) + judge.prefix
        reference = llama_cpp.Llama(model_path=str(backend.path), n_ctx=1024, logits_all=True, verbose=False)
        reference.eval(ids)
        logits = np.asarray(reference.scores[len(ids) - 1])[[judge.tokens[v] for v in "ABC"]]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        probs = detail["probabilities"]
        assert np.allclose([probs[v] for v in "ABC"], expected, atol=2e-3)
        assert letter == "ABC"[int(np.argmax(expected))]
        # again on the same instance: its cache already holds the prompt, so only the last id is evaluated
        # (a one-row batch: llama.cpp's quantized kernels round differently than in a full batch)
        again, again_detail = judge.verdict(messages)
        assert again == letter
        assert np.allclose([again_detail["probabilities"][v] for v in "ABC"], [probs[v] for v in "ABC"], atol=0.05)
    finally:
        backend.close()


def test_ctrl_c_keeps_the_verdicts_so_far_and_a_new_run_resumes(judge_server, db):
    from llm_compare.backends.openai import OpenAIBackend
    from llm_compare.judge import TextJudge
    from llm_compare.specs import ModelSpec

    path, ids = db
    judge = TextJudge(OpenAIBackend(ModelSpec(name="j", source=judge_server.url, backend="openai", timeout_s=3)), "j")

    def ctrl_c_after_the_second(n, total, battle, line):
        if n == 2:
            raise KeyboardInterrupt

    with VoteStore(path) as store:
        battles, _ = pick_battles(store, "j")
        first = run_judge(store, judge, battles[:3], progress=ctrl_c_after_the_second)
        assert first.interrupted and [bid for bid, _ in first.judged] == [battles[0].id, battles[1].id]
        assert store.judged_ids("j") == {battles[0].id, battles[1].id}
        stop = threading.Event()
        stop.set()
        assert run_judge(store, judge, battles[2:], stop=stop).interrupted  # the app's stop: before the next battle
        rest, skipped = pick_battles(store, "j")
        assert skipped == 2 and [b.id for b in rest] == [b.id for b in battles[2:]]


def test_judge_refuses_a_read_only_database_before_loading(db):
    from test_hardening import cli, needs_ro_mount, run_on_readonly_mount

    if needs_ro_mount.args[0]:
        pytest.skip(needs_ro_mount.kwargs.get("reason", "no read-only mount here"))
    path, _ = db
    done = run_on_readonly_mount(path.parent, *cli("judge", "--judge", "http://127.0.0.1:9", "--db", str(path)))
    assert done.returncode == 2, done.stderr
    assert "read-only" in done.stderr and "writable copy" in done.stderr and "cannot reach" not in done.stderr
