"""The batch report on tiny random models built here: files, escaping, stored battles, refusals."""

import re

import pytest
import torch

from llm_compare.cli import main
from llm_compare.engine import Metrics, SideState, Status
from llm_compare.params import GenerationParams
from llm_compare.pool import ModelPool
from llm_compare.presets import Preset
from llm_compare.markup import md_cell
from llm_compare.report import PairResult, Report, render_html, run_suite
from llm_compare.specs import spec_from_source
from llm_compare.store import VoteStore

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat_model(directory, seed):
    """A random 2-layer Llama with a small byte-level BPE tokenizer and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, how are you", "the sky is blue", "你好，世界。他知道我知道",
                             "user assistant system", "def f(x): return x"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return [str(build_tiny_chat_model(root / name, seed)) for seed, name in enumerate(("tiny-left", "tiny-right"))]


SUITE = """
[[prompts]]
group = "t"
label = "english"
text = "hello, how are you?"

[[prompts]]
group = "t"
label = "html <b>bold</b>"
text = "<script>alert(1)</script> | *stars* and `ticks`"

[[prompts]]
group = "t"
label = "中文"
text = "他知道我知道你知道他不知道吗？"
"""


def test_report_command_writes_both_files_and_stores_blind_battles(tmp_path, tiny_models, capsys):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE, encoding="utf-8")
    out, db = tmp_path / "out", tmp_path / "v.db"
    code = main(["report", "--prompts", str(suite), "--model-a", tiny_models[0], "--model-b", tiny_models[1],
                 "--dtype-a", "float32", "--dtype-b", "float32", "--out", str(out), "--db", str(db),
                 "--max-new-tokens", "6", "--greedy"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "3/3" in err and "wrote" in err
    md, page = (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")
    for text in ("median first token", "median tokens/s", "tiny-left", "tiny-right", "中文", "他知道我知道你知道他不知道吗？"):
        assert text in md and text in page
    # model and prompt text cannot inject markup: escaped in HTML, literal in Markdown
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in md and "&#124;" in md
    assert not re.search(r"<link|<script|src=", page)  # self-contained: inline CSS, nothing fetched
    assert page.count('class="pair"') == 3 and "<style>" in page

    with VoteStore(db) as store:
        battles = store.battles()
    assert len(battles) == 3
    assert all(b.source == "batch" and b.anony and b.vote is None for b in battles)
    assert all({b.model_a, b.model_b} == {"tiny-left", "tiny-right"} for b in battles)
    assert [b.question_id for b in battles] == ["suite/english", "suite/html <b>bold</b>", "suite/中文"]
    assert all(b.spec_a["dtype"] == "float32" and b.params["max_new_tokens"] == 6 for b in battles)
    assert all(b.metrics_a["new_tokens"] <= 6 and "finish_reason" in b.metrics_a for b in battles)
    for b in battles:  # every stored answer is the one in the report
        assert html_escaped(b.answer_a) in page and html_escaped(b.answer_b) in page


def html_escaped(text):
    import html

    return html.escape(text, quote=True)


def test_run_suite_alternates_which_model_goes_first():
    """Scripted models (tests/scripted.py): the order and the bookkeeping, not what a model says."""
    from scripted import ScriptedPool, scripted_spec

    spec_a, spec_b = scripted_spec("left"), scripted_spec("right")
    presets = [Preset("t", f"p{i}", f"hello {i}") for i in range(3)]
    seen = []
    report = run_suite(presets, spec_a, spec_b, GenerationParams(max_new_tokens=4, greedy=True),
                       ScriptedPool({"left": dict(tokens="LLLLL", delays=0.01), "right": dict(tokens="RRRRR", delays=0.01)}),
                       progress=lambda n, total, preset, state: seen.append((n, total, state.finished)))
    assert [r.first for r in report.results] == ["a", "b", "a"]
    for r in report.results:  # sequential: the side that goes first ends before the other starts
        first, second = (r.a, r.b) if r.first == "a" else (r.b, r.a)
        assert first.started_at + first.metrics.elapsed_s <= second.started_at
        assert (r.a.text, r.b.text) == ("LLLL", "RRRR")  # A's answer stays A's when B goes first
        assert r.a.status == r.b.status == Status.DONE and r.battle_id is None
    assert seen[-1] == (2, 3, True) and {n for n, _, _ in seen} == {0, 1, 2}


def test_bad_suites_are_refused_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n", encoding="utf-8")
    assert main(["report", "--prompts", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert f"preset file {empty} has no [[prompts]]" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("[[prompts]]\ngroup = 'x'\nlabel = 'y'\ntext = \n", encoding="utf-8")
    assert main(["report", "--prompts", str(broken)]) == 2
    assert f"preset file {broken} is not valid TOML" in capsys.readouterr().err
    assert main(["report", "--prompts", "no-such-group"]) == 2
    assert "no prompt group 'no-such-group'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_markdown_cells_are_literal():
    assert md_cell("a|b\n  <i>*x*</i> [l](u) `c`") == (
        "a&#124;b<br>&nbsp; &lt;i&gt;&#42;x&#42;&lt;/i&gt; &#91;l&#93;(u) &#96;c&#96;"
    )


def test_html_marks_a_failed_side():
    spec = spec_from_source("/tmp/x-model")
    ok = SideState("a", "A", text="fine", status="done", metrics=Metrics(ttft_s=0.1, elapsed_s=1.0, new_tokens=5, tokens_per_s=4.0))
    bad = SideState("b", "B", status="error", error="B failed: <boom>")
    report = Report("s", spec, spec, GenerationParams(), [PairResult(Preset("g", "l", "t"), ok, bad, "a")])
    page = render_html(report)
    assert 'class="answer error">[error] B failed: &lt;boom&gt;' in page
    assert "1/1" in page and "0/1" in page  # prompts answered per side
    assert "ran first" in page and "ran second" in page


@pytest.mark.slow
def test_report_on_the_embedded_default_pair(tmp_path, capsys):
    out, db = tmp_path / "out", tmp_path / "v.db"
    code = main(["report", "--model-a", "smollm2-bf16", "--model-b", "smollm2-fp32", "--out", str(out),
                 "--db", str(db), "--max-new-tokens", "8", "--greedy"])
    assert code == 0, capsys.readouterr().err
    md = (out / "report.md").read_text(encoding="utf-8")
    assert (out / "report.html").exists() and md.count("| answer |") == 5
    with VoteStore(db) as store:
        assert store.counts()["battles"] == 5
        battles = store.battles()
    # each stored pair is what the report shows (the run's own answers, whatever the model says)
    for b in battles:
        assert f"| answer | {md_cell(b.answer_a)} | {md_cell(b.answer_b)} |" in md or \
            f"| answer | {md_cell(b.answer_b)} | {md_cell(b.answer_a)} |" in md


def test_a_prompt_a_model_cannot_take_is_reported_not_stored(tmp_path, tiny_models, capsys):
    suite = tmp_path / "long.toml"
    long_text = "hello world " * 400  # far beyond the tiny models' 256-token context
    suite.write_text(f'[[prompts]]\ngroup = "g"\nlabel = "ok"\ntext = "hello"\n\n'
                     f'[[prompts]]\ngroup = "g"\nlabel = "too long"\ntext = "{long_text}"\n', encoding="utf-8")
    out, db = tmp_path / "out", tmp_path / "v.db"
    code = main(["report", "--prompts", str(suite), "--model-a", tiny_models[0], "--model-b", tiny_models[1],
                 "--dtype-a", "float32", "--dtype-b", "float32", "--out", str(out), "--db", str(db),
                 "--max-new-tokens", "4", "--greedy"])
    err = capsys.readouterr().err
    assert code == 2 and "too long (A)" in err and "takes at most 256" in err
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.count("&#91;error&#93;") == 2 and "| prompts answered | 1/2 | 1/2 |" in md
    with VoteStore(db) as store:
        assert [b.question_id for b in store.battles()] == ["long/ok"]


def test_report_with_a_judge_adds_its_verdict(tmp_path, tiny_models, capsys):
    from test_judge import JudgeServer

    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE, encoding="utf-8")
    out, db = tmp_path / "out", tmp_path / "v.db"
    with JudgeServer() as server:
        code = main(["report", "--prompts", str(suite), "--model-a", tiny_models[0], "--model-b", tiny_models[1],
                     "--dtype-a", "float32", "--dtype-b", "float32", "--out", str(out), "--db", str(db),
                     "--max-new-tokens", "6", "--greedy", "--judge", server.url])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "judged 3 battles" in err and len(server.requests) == 6, err  # three battles, both orders
    with VoteStore(db) as store:
        assert len(store.judge_records()) == 3 and store.clean_battles() == []
    md, page = (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")
    for text in (md, page):
        assert "Judge verdict" in text and "style-controlled" in text and "style coefficients" in text
        assert "tiny-left" in text.split("Judge verdict")[1]
    assert "Chinese prompts" in md  # one of three prompts is Chinese: its own table
    assert main(["report", "--prompts", str(suite), "--no-store", "--judge", server.url, "--out", str(out)]) == 2
    assert "--no-store" in capsys.readouterr().err


def test_report_tab_judge_option_stores_verdicts_and_adds_the_section(tmp_path, tiny_models):
    from test_judge import JudgeServer

    from llm_compare.specs import load_registry
    from llm_compare.ui.report_tab import NO_JUDGE, make_report
    from llm_compare.ui.session import AppContext

    presets = [Preset("t", "one", "hello, how are you?"), Preset("t", "two", "他知道我知道吗？")]
    with VoteStore(tmp_path / "v.db") as store:
        ctx = AppContext(registry=load_registry(), pool=ModelPool(), presets=presets, store=store,
                         dtypes={"a": "float32", "b": "float32"})
        run_report = make_report(ctx)
        quiet = lambda *args, **kwargs: None
        with JudgeServer() as server:
            files, preview, status = run_report("t", tiny_models[0], tiny_models[1], 6, True, server.url, progress=quiet)
        assert "judged 2 battles" in status and "Judge verdict" in preview
        assert len(store.judge_records()) == 2 and store.counts()["votes"] == 0
        files, preview, status = run_report("t", tiny_models[0], tiny_models[1], 6, True, NO_JUDGE, progress=quiet)
        assert "judged" not in status and "Judge verdict" not in preview
