"""The benches' docs tables (`--markdown FILE`): one helper heads each block with CPU model, date,
commit, load and command, and rewrites only its own block of the page."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

from llm_compare.machine import cpu_model

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402


def test_the_heading_names_cpu_date_commit_load_and_command():
    heading = _common.run_heading(["/somewhere/bench/conversation.py", "--layers", "1", "--markdown", "x.md"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=BENCH).stdout.strip()
    assert heading.startswith(f"CPU {cpu_model()}, ")
    assert time.strftime("%Y-%m-%d", time.gmtime()) in heading and f"commit {commit}" in heading
    assert re.search(r"load average \d+\.\d at start", heading)
    assert heading.endswith("`python bench/conversation.py --layers 1 --markdown x.md`")


def test_tables_replace_only_their_own_block(tmp_path):
    page = tmp_path / "page.md"
    _common.write_tables(page, "bench/a.py", "HEAD 1", ["| t | 1 |"], "A page")
    assert page.read_text().startswith("# A page\n") and "HEAD 1" in page.read_text()
    page.write_text("intro prose\n\n" + page.read_text().split("\n", 1)[1] + "\nclosing prose\n")
    _common.write_tables(page, "/x/bench/b.py", "HEAD B", ["| b |"], "unused")  # another bench's block: appended
    _common.write_tables(page, "a.py", "HEAD 2", ["| t | 2 |"], "unused")
    text = page.read_text()
    assert "intro prose" in text and "closing prose" in text and "HEAD B" in text and "| b |" in text
    assert "HEAD 1" not in text and "| t | 1 |" not in text and text.count("HEAD 2") == 1
    assert text.index("HEAD 2") < text.index("closing prose") < text.index("HEAD B")  # rewritten in place


def test_a_bench_writes_one_block_per_part(tmp_path):
    """A model measured in a run of its own replaces its own tables, not another model's."""
    page = tmp_path / "page.md"
    _common.write_tables(page, "bench/c.py", "RUN 1", ["| qwen 1 |"], "C", part="Qwen")
    _common.write_tables(page, "bench/c.py", "RUN 2", ["| glm 2 |"], "C", part="GLM")
    _common.write_tables(page, "bench/c.py", "RUN 3", ["| qwen 3 |"], "C", part="Qwen")
    text = page.read_text()
    assert "| qwen 1 |" not in text and text.index("| qwen 3 |") < text.index("| glm 2 |")
    assert "RUN 2" in text and "<!-- bench/c.py GLM -->" in text and "<!-- /bench/c.py Qwen -->" in text


def test_every_bench_with_markdown_writes_through_the_helper():
    """A bench offering --markdown heads and writes its tables with _common's helpers, not its own."""
    writers = []
    for script in sorted(BENCH.glob("*.py")):
        source = script.read_text(encoding="utf-8")
        if '"--markdown"' not in source:
            continue
        writers.append(script.name)
        called = {node.func.id for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert {"run_heading", "write_tables"} <= called, script.name
    assert writers  # the docs pages' benches (conversation.py, conversation_drafts.py)
