"""Issue 12: bad input and hostile text never reach a spreadsheet, a traceback or a lost result."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llm_compare.cli import main
from llm_compare.errors import UserError
from llm_compare.store import VoteStore

REPO = Path(__file__).resolve().parent.parent
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(1+1)", "\t=1+1", "\r=1+1"]


def test_csv_export_neutralises_formulas_and_jsonl_stays_exact(tmp_path):
    db = tmp_path / "v.db"
    with VoteStore(db) as s:
        for text in FORMULAS:
            bid = s.record_battle(prompt=text, model_a="m1", model_b="m2", answer_a=text, answer_b="plain -1 answer")
            s.record_vote(bid, "a", voter=text)
    out_csv, out_jsonl = tmp_path / "b.csv", tmp_path / "b.jsonl"
    assert main(["export", "--db", str(db), "--format", "csv", "--out", str(out_csv)]) == 0
    assert main(["export", "--db", str(db), "--out", str(out_jsonl)]) == 0
    with open(out_csv, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["prompt"] for r in rows] == ["'" + t for t in FORMULAS]
    assert [r["answer_a"] for r in rows] == ["'" + t for t in FORMULAS]
    assert [r["judge"] for r in rows] == ["'" + t for t in FORMULAS]
    assert all(r["answer_b"] == "plain -1 answer" and r["model_a"] == "m1" for r in rows)
    records = [json.loads(line) for line in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["conversation_a"][0]["content"] for r in records] == FORMULAS
    assert [r["conversation_a"][1]["content"] for r in records] == FORMULAS


# -- 3. a database on a read-only filesystem -----------------------------------------------------

def _readonly_mounts_work() -> bool:
    """Root can write through file permissions; a read-only bind mount in a private mount namespace
    stops even root (and vanishes with the process)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = 'd=$(mktemp -d) && mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" && ! touch "$d/x" 2>/dev/null'
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


needs_ro_mount = pytest.mark.skipif(not _readonly_mounts_work(),
                                    reason="needs root and unshare to make a read-only mount")


def run_on_readonly_mount(directory, *argv, **kw) -> subprocess.CompletedProcess:
    """`argv` with `directory` bind-mounted read-only over itself (only this process sees that)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, str(directory), *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=120, **kw)


def cli(*argv) -> list[str]:
    return [sys.executable, "-m", "llm_compare", *argv]


def small_voted_store(path):
    with VoteStore(path) as s:
        for n in range(3):
            bid = s.record_battle(prompt=f"q{n}", model_a="alpha", model_b="beta", answer_a="x", answer_b="y")
            s.record_vote(bid, "a")


@needs_ro_mount
def test_database_on_a_readonly_filesystem_serves_leaderboard_and_export(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    small_voted_store(data / "v.db")
    before = sorted(p.name for p in data.iterdir())
    board = run_on_readonly_mount(data, *cli("leaderboard", "--all", "--db", str(data / "v.db")))
    assert board.returncode == 0, board.stderr
    assert "alpha" in board.stdout and "Traceback" not in board.stderr
    assert "read-only filesystem" in board.stderr and "votes cannot be saved" in board.stderr
    out = tmp_path / "b.jsonl"
    export = run_on_readonly_mount(data, *cli("export", "--db", str(data / "v.db"), "--out", str(out)))
    assert export.returncode == 0, export.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    vote = run_on_readonly_mount(data, sys.executable, "-c", (
        "import sys; from llm_compare.store import VoteStore; from llm_compare.errors import UserError\n"
        "s = VoteStore(sys.argv[1])\n"
        "try:\n    s.record_vote(1, 'b')\nexcept UserError as e:\n    print(e)\n"), str(data / "v.db"))
    assert "cannot save the vote" in vote.stdout and "read-only filesystem" in vote.stdout, vote.stderr
    assert sorted(p.name for p in data.iterdir()) == before


@needs_ro_mount
def test_readonly_filesystem_with_unmerged_wal_says_so(tmp_path):
    """Writes a killed writer left in the -wal file cannot be read without -shm: say so, never show less."""
    data = tmp_path / "data"
    data.mkdir()
    small_voted_store(data / "v.db")
    writer = ("import sqlite3, os, sys\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('PRAGMA wal_autocheckpoint = 0')\n"
              "db.execute('DELETE FROM votes WHERE battle_id = 3')\n"
              "os._exit(0)\n")  # killed: no checkpoint, the -wal file stays
    subprocess.run([sys.executable, "-c", writer, str(data / "v.db")], check=True)
    assert (data / "v.db-wal").stat().st_size > 0 and (data / "v.db-shm").exists()
    board = run_on_readonly_mount(data, *cli("leaderboard", "--all", "--json", "--db", str(data / "v.db")))
    assert board.returncode == 0 and json.loads(board.stdout)["battles"] == 2, board.stderr  # the -wal was read
    (data / "v.db-shm").unlink()
    board = run_on_readonly_mount(data, *cli("leaderboard", "--all", "--db", str(data / "v.db")))
    assert board.returncode == 2 and "v.db-wal" in board.stderr and "Traceback" not in board.stderr
    assert len(board.stderr.strip().splitlines()) == 1


# -- 2. a GGUF file cut short --------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_file():
    from llm_compare.loading import embedded_path

    return embedded_path("smollm2")


def cut_copy(src, dst, size):
    with open(src, "rb") as f:
        dst.write_bytes(f.read(size))
    return dst


def test_whole_gguf_header_accounts_for_the_file(gguf_file):
    from llm_compare.loading.gguf.header import check_gguf

    header = check_gguf(gguf_file)
    size = gguf_file.stat().st_size
    assert all(t.nbytes() is not None for t in header.tensors)  # every type in it is known
    assert size - 64 <= header.data_end() <= size  # the tensors end at the end (up to padding)


def test_gguf_cut_inside_its_header_is_one_error_line_and_exit_2(gguf_file, tmp_path, capsys):
    cut = cut_copy(gguf_file, tmp_path / "t.gguf", 1_000_000)
    assert main(["ask", "hi", "--model-a", str(cut), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: t.gguf ends inside its GGUF header"), err


def test_doctor_flags_a_gguf_cut_in_its_tensor_data_as_loading_does(gguf_file, tmp_path, capsys):
    from llm_compare.loading import resolve_source

    cut = cut_copy(gguf_file, tmp_path / "half.gguf", 50 * 2**20)
    assert main(["doctor", str(cut)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: half.gguf is cut short" in out and "all good" not in out
    with pytest.raises(UserError, match="half.gguf is cut short"):  # what loading runs first
        resolve_source(str(cut))
    assert main(["doctor", str(gguf_file)]) == 0


# -- 5 and 8. settings checked once for the CLI and the app --------------------------------------

@pytest.mark.parametrize("value", [2**70, "x", 1.5, 2**32])
def test_seed_out_of_range_is_one_message_for_cli_and_ui(value):
    from llm_compare.params import GenerationParams, parse_seed
    from llm_compare.ui.handlers import params_from_inputs

    with pytest.raises(UserError, match="seed must be a whole number from 0 to 4294967295"):
        params_from_inputs(32, 0.7, 0.9, 1.0, value, False)
    with pytest.raises(UserError, match="seed must be a whole number from 0 to 4294967295"):
        parse_seed(value)
    if isinstance(value, int):
        with pytest.raises(UserError, match="seed must be"):
            GenerationParams(seed=value)


def test_seed_forms_that_mean_something():
    from llm_compare.params import parse_seed

    assert [parse_seed(v) for v in (None, "", -1, -1.0, 0, 7.0, "42", 2**32 - 1)] == [None, None, None, None, 0, 7, 42,
                                                                                       2**32 - 1]


def test_cli_seed_out_of_range_is_refused_before_loading(capsys):
    assert main(["ask", "hi", "--seed", str(2**70)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed must be a whole number" in err[0]


def test_seed_through_the_app_api_is_a_clear_message_without_traceback(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from conftest import start_app

    with start_app(["--no-votes"], tmp_path) as url:
        client = Client(url, verbose=False)
        for seed in (2**70, "x"):
            with pytest.raises(AppError, match="seed must be a whole number"):
                client.predict("hi", system="", seed=seed, max_new_tokens=2, api_name="/compare")
    log = (tmp_path / "app.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "Overflow" not in log


@pytest.mark.parametrize("argv", [["ask", "hi", "--threads-a", "0"], ["ask", "hi", "--threads-b", "-2"],
                                  ["report", "--threads-a", "0", "--no-store"]])
def test_cli_threads_below_one_refused_like_the_app(argv, capsys, tmp_path, monkeypatch):
    from llm_compare.app_flags import build_parser, check_flags

    monkeypatch.chdir(tmp_path)  # report would write ./report

    assert main(argv + ["--max-new-tokens", "2"]) == 2
    cli_err = capsys.readouterr().err.strip()
    flag = next(a for a in argv if a.startswith("--threads"))
    value = argv[argv.index(flag) + 1]
    with pytest.raises(UserError) as app_err:
        check_flags(build_parser().parse_args([flag, value]))
    assert cli_err == f"error: {app_err.value}" and f"{flag} must be a whole number from 1 to" in cli_err


def test_registry_threads_below_one_refused(tmp_path):
    from llm_compare.specs import load_registry

    reg = tmp_path / "models.toml"
    reg.write_text('[models.m]\nsource = "embedded:smollm2"\nthreads = 0\n', encoding="utf-8")
    with pytest.raises(UserError, match="'m': threads must be a whole number from 1 to"):
        load_registry(reg)


# -- 6. long prompts: standard input and --prompt-file -------------------------------------------

LLAMA_PAIR = ["--model-a", "smollm2-llamacpp", "--model-b", "smollm2-llamacpp", "--max-new-tokens", "2", "--greedy"]


def stdin_of(monkeypatch, data: bytes):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_prompt_longer_than_a_command_line_from_stdin_and_file(tmp_path, monkeypatch, capsys):
    pytest.importorskip("llama_cpp")
    long_prompt = ("Describe the sea in one word. " * 5000).encode()  # 150 KB: more than Linux takes in argv
    assert len(long_prompt) > 128 * 1024
    stdin_of(monkeypatch, long_prompt)
    assert main(["ask", "-", *LLAMA_PAIR]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("the prompt is" in line and "takes at most" in line for line in err), err
    path = tmp_path / "prompt.txt"
    path.write_bytes(long_prompt)
    assert main(["ask", "--prompt-file", str(path), *LLAMA_PAIR]) == 2
    assert all("takes at most" in line for line in capsys.readouterr().err.strip().splitlines())


def test_short_prompt_from_stdin_and_file_is_the_same_question(tmp_path, monkeypatch, capsys):
    pytest.importorskip("llama_cpp")
    assert main(["ask", "Name a colour.", "--json", *LLAMA_PAIR]) == 0
    by_arg = [json.loads(line)["prompt_tokens"] for line in capsys.readouterr().out.splitlines()]
    stdin_of(monkeypatch, "Name a colour.\n".encode())
    assert main(["ask", "-", "--json", *LLAMA_PAIR]) == 0
    assert [json.loads(line)["prompt_tokens"] for line in capsys.readouterr().out.splitlines()] == by_arg
    (tmp_path / "q.txt").write_text("Name a colour.\n", encoding="utf-8")
    assert main(["ask", "--prompt-file", str(tmp_path / "q.txt"), "--json", *LLAMA_PAIR]) == 0
    assert [json.loads(line)["prompt_tokens"] for line in capsys.readouterr().out.splitlines()] == by_arg


@pytest.mark.parametrize("argv, problem", [
    (["ask"], "no prompt; pass the question"),
    (["ask", "hi", "--prompt-file", "x.txt"], "the prompt was given twice"),
    (["ask", "--prompt-file", "/nonexistent/q.txt"], "--prompt-file /nonexistent/q.txt does not exist"),
])
def test_prompt_arguments_refused_with_one_line(argv, problem, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + problem), err


# -- 4. report never throws finished work away ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from conftest import build_tiny_chat_model

    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "tiny"))


def suite_file(path, n):
    path.write_text("".join(f'[[prompts]]\ngroup = "t"\nlabel = "p{i}"\ntext = "Tell me about the sea, {i}."\n\n'
                            for i in range(n)), encoding="utf-8")
    return path


def report_argv(suite, out, tiny_model, *extra):
    return ["report", "--prompts", str(suite), "--model-a", tiny_model, "--model-b", tiny_model, "--dtype-a", "float32",
            "--dtype-b", "float32", "--out", str(out), "--greedy", *extra]


def test_report_refuses_an_unwritable_out_dir_before_loading(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = report_argv(suite_file(tmp_path / "s.toml", 2), tmp_path / "file" / "out", "/nonexistent/model.gguf")
    assert main(argv + ["--no-store"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write the report to") and "--out" in err[0], err


@needs_ro_mount
def test_report_refuses_a_readonly_database_before_the_first_prompt(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    small_voted_store(data / "v.db")
    argv = report_argv(suite_file(tmp_path / "s.toml", 2), tmp_path / "out", tiny_model, "--db", str(data / "v.db"))
    run = run_on_readonly_mount(data, *cli(*argv))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and "read-only" in err[0] and "--no-store" in err[0], err
    assert "1/2" not in run.stderr and not (tmp_path / "out" / "report.md").exists()  # nothing ran


def test_report_files_are_written_when_storing_fails(tmp_path, tiny_model, capsys):
    import sqlite3

    db = tmp_path / "v.db"
    VoteStore(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database past the 5 s busy timeout
    try:
        code = main(report_argv(suite_file(tmp_path / "s.toml", 2), tmp_path / "out", tiny_model, "--db", str(db),
                                "--max-new-tokens", "4"))
    finally:
        other.rollback()
        other.close()
    err = capsys.readouterr().err
    assert code == 2 and "cannot save the battle" in err and "database is locked" in err, err
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## 1. p0" in md and "## 2. p1" in md  # both prompts ran and are in the report
    with VoteStore(db) as s:
        assert s.counts()["battles"] == 0


def test_ctrl_c_writes_the_prompts_that_finished(tmp_path, tiny_model):
    n = 40
    db, out = tmp_path / "v.db", tmp_path / "out"
    argv = report_argv(suite_file(tmp_path / "s.toml", n), out, tiny_model, "--db", str(db), "--max-new-tokens", "200")
    proc = subprocess.Popen(cli(*argv), cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:  # one line per finished prompt when stderr is not a terminal
        lines.append(line)
        if f" 1/{n} " in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(lines) + rest
    assert "Traceback" not in rest and "interrupted: the report has the" in rest
    md = (out / "report.md").read_text(encoding="utf-8")
    finished = len(re.findall(r"^## \d+\. ", md, re.M))  # the prompt sections ("## 1. label")
    assert 1 <= finished < n and f"{finished} of {n} (interrupted)" in md
    assert (out / "report.html").exists()
    with VoteStore(db) as s:  # every finished pair was stored, the one in flight was not
        assert s.counts()["battles"] == finished


# -- 7. a side stopped before its first token is no battle ----------------------------------------

@pytest.fixture
def voting_ctx(tmp_path):
    """The app's turn and store on a scripted model (tests/scripted.py): a token every 10 ms."""
    from scripted import WORDS, ScriptedApp, ScriptedPool, scripted_registry, scripted_spec

    with VoteStore(tmp_path / "votes.db") as store:
        yield ScriptedApp(registry=scripted_registry(scripted_spec("m")),
                          pool=ScriptedPool({"m": dict(tokens=WORDS * 5, delays=0.01)}), store=store)


SCRIPTED_PAIR = {"a": "m", "b": "m"}


def test_turn_with_a_side_stopped_before_its_first_token_is_not_votable(voting_ctx):
    from llm_compare.params import GenerationParams
    from llm_compare.ui.session import Conversation, run_turn, vote

    conv = Conversation()
    params = GenerationParams(max_new_tokens=24, greedy=True)
    for frame in run_turn(voting_ctx, conv, "Count from one to fifty.", SCRIPTED_PAIR, params, sequential=True):
        if frame.state and frame.state.a.status == "running":
            conv.run.stop_side("b")  # B has not started: sequential runs it after A
    assert frame.state.b.status == "stopped" and frame.state.b.text == "" and frame.state.a.status == "done"
    assert conv.battle_id is None and conv.note == "not stored for voting: side B was stopped before its first token"
    with pytest.raises(UserError, match="nothing to vote on"):
        vote(voting_ctx, conv, "a")
    assert voting_ctx.store.counts()["battles"] == 0


def test_partly_stopped_answer_is_votable_and_marked_in_the_export(voting_ctx, tmp_path):
    from llm_compare.params import GenerationParams
    from llm_compare.ui.session import Conversation, run_turn, vote

    conv = Conversation()
    params = GenerationParams(max_new_tokens=24, greedy=True)
    for frame in run_turn(voting_ctx, conv, "Count from one to fifty.", SCRIPTED_PAIR, params, sequential=True):
        if frame.state and frame.state.a.metrics.new_tokens > 0:
            conv.run.stop_side("a")
    assert frame.state.a.status == "stopped" and frame.state.a.text and conv.can_vote
    vote(voting_ctx, conv, "b")
    out_jsonl, out_csv = tmp_path / "b.jsonl", tmp_path / "b.csv"
    db = str(voting_ctx.store.path)
    assert main(["export", "--db", db, "--out", str(out_jsonl)]) == 0
    assert main(["export", "--db", db, "--format", "csv", "--out", str(out_csv)]) == 0
    record = json.loads(out_jsonl.read_text(encoding="utf-8"))
    assert record["finish_reason_a"] == "stopped" and record["finish_reason_b"] in ("stop", "length")
    with open(out_csv, encoding="utf-8-sig", newline="") as f:
        row = next(csv.DictReader(f))
    assert (row["finish_reason_a"], row["finish_reason_b"]) == ("stopped", record["finish_reason_b"])


def test_the_store_refuses_a_pair_with_a_side_stopped_before_its_first_token(tmp_path):
    from llm_compare.arena import record_pair
    from llm_compare.engine import Metrics, SideState
    from llm_compare.specs import ModelSpec

    done = SideState("a", "A", text="Paris.", status="done", finish_reason="stop", metrics=Metrics(new_tokens=2))
    empty = SideState("b", "B", text="", status="stopped", finish_reason="stopped", metrics=Metrics())
    spec = ModelSpec(name="m", source="/x")
    with VoteStore(tmp_path / "v.db") as store:
        with pytest.raises(UserError, match="side B was stopped before its first token"):
            record_pair(store, spec, done, spec, empty, [{"role": "user", "content": "Capital of France?"}])
        assert store.counts()["battles"] == 0


def test_random_bytes_after_the_gguf_magic_are_refused_without_reading_huge_lengths(tmp_path):
    from llm_compare.loading.gguf.header import check_gguf

    rng = __import__("random").Random(0)
    for n in range(20):
        bad = tmp_path / f"r{n}.gguf"
        bad.write_bytes(b"GGUF" + rng.randbytes(256))
        with pytest.raises(UserError, match=f"r{n}.gguf"):
            check_gguf(bad)
