"""The CLI: answers with metrics, and one-line errors with exit code 2 for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llm_compare.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "llm_compare", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def test_ask_json_on_two_local_models(tiny_model_dir, capsys):
    code = main(["ask", "Why is the sky blue?", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
                 "--dtype-a", "float32", "--dtype-b", "bfloat16", "--greedy", "--max-new-tokens", "8", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 2
    rows = [json.loads(line) for line in out]
    assert [r["side"] for r in rows] == ["a", "b"]
    for r in rows:
        assert {"text", "new_tokens", "ttft_s", "tokens_per_s", "elapsed_s"} <= set(r)
        assert r["new_tokens"] == 8 and r["ttft_s"] <= r["elapsed_s"] and r["error"] is None


def test_ask_sequential_text_output(tiny_model_dir, capsys):
    code = main(["ask", "hello", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
                 "--greedy", "--max-new-tokens", "5", "--sequential", "--dtype-a", "float32", "--dtype-b", "float32"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("== ") == 2 and "5 tokens" in out and "tok/s" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "hi", "--model-a", "/no/such/model"], "does not exist"),
        (["ask", "hi", "--model-a", "no-such-name"], "unknown model"),
        (["ask", "  "], "prompt is empty"),
        (["ask", "hi", "--max-new-tokens", "0"], "from 1 to"),
        (["ask", "hi", "--max-new-tokens", "-3"], "from 1 to"),
        (["ask", "hi", "--registry", "/no/registry.toml"], "registry file"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_directory_that_is_not_a_model(tmp_path, capsys):
    assert main(["ask", "hi", "--model-a", str(tmp_path)]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_prompt_longer_than_context(tiny_model_dir, capsys):
    code = main(["ask", "sky " * 400, "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
                 "--max-new-tokens", "4", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert "takes at most 256" in captured.err and "Traceback" not in captured.err


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-bf16" in out and "default pair" in out


def test_fresh_process_answers_from_the_embedded_default():
    """The README's promise: no model path, no download, an answer with metrics."""
    proc = run_cli("ask", "Why is the sky blue?", "--json", "--max-new-tokens", "12", "--greedy")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["model"] for r in rows] == ["smollm2-bf16", "smollm2-fp32"]
    assert all(r["text"] and r["new_tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows)


def test_fresh_process_bad_input_has_no_traceback():
    proc = run_cli("ask", "hi", "--model-a", "/no/such/model")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: model path /no/such/model does not exist; check the path or run `python -m llm_compare models`"]


def test_seed_prompt_on_both_legacy_fixtures_gives_the_original_replies(capsys):
    """Issue 4's acceptance command: the replies equal what the original chat() produced.

    In float32 only: the reference replies were computed in float32, and in bfloat16 the tiny Qwen's
    greedy reply drifts from them (README "What reproduces exactly")."""
    from conftest import LEGACY_FIXTURES

    prompt = "请说出以下两句话区别在哪里？ 1、冬天：能穿多少穿多少 2、夏天：能穿多少穿多少"
    glm, qwen = LEGACY_FIXTURES / "chatglm3-6b-tiny", LEGACY_FIXTURES / "qwen-7b-chat-tiny"
    code = main(["ask", prompt, "--model-a", str(glm), "--model-b", str(qwen), "--greedy", "--max-new-tokens", "16",
                 "--dtype-a", "float32", "--dtype-b", "float32", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0
    for row, directory in zip(rows, (glm, qwen)):
        assert row["dtype"] == "float32"
        ref = json.loads((directory / "reference.json").read_text())
        case = next(c for c in ref["chat"] if c["name"] == "zh_single_turn")
        assert row["text"] == case["reply"]
    # Qwen-1's generation_config.json recommends repetition_penalty 1.1; no flag overrode it
    assert rows[1]["params"]["repetition_penalty"] == 1.1 and rows[0]["params"]["repetition_penalty"] == 1.0


def test_explicit_setting_overrides_the_models_recommendation(capsys):
    from conftest import LEGACY_FIXTURES

    qwen = str(LEGACY_FIXTURES / "qwen-7b-chat-tiny")
    code = main(["ask", "你好", "--model-a", qwen, "--model-b", qwen, "--greedy", "--max-new-tokens", "3",
                 "--repetition-penalty", "1.0", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and {r["params"]["repetition_penalty"] for r in rows} == {1.0}


def test_one_model_at_a_time_swaps_and_reports_the_swap(tiny_model_dir, capsys):
    code = main(["ask", "hello", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir), "--dtype-a",
                 "float32", "--dtype-b", "bfloat16", "--one-model-at-a-time", "--greedy", "--max-new-tokens", "4",
                 "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and all(r["new_tokens"] == 4 and r["model_wait_s"] is not None for r in rows)
