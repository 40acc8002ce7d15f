"""Token fidelity (llm_compare/fidelity.py): teacher-forced logits on every backend, the statistics
against an independent numpy computation, self-comparison, refusal, cutting, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_compare.backends import open_backend
from llm_compare.backends.base import Backend
from llm_compare.cli import main
from llm_compare.errors import UserError
from llm_compare.fidelity import merged, presets_fidelity, score_all, reading_of_answer, text_fidelity
from llm_compare.presets import Preset
from llm_compare.specs import ModelSpec

TEXT = ("The sky is blue because air scatters short wavelengths of sunlight more than long ones. "
        "Write a short poem about the sea, then explain its rhythm in one sentence. One, two, three.")


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir):
    """The tiny model in float32 (reference) and bfloat16: one tokenizer, different logits."""
    a = open_backend(ModelSpec(name="t32", source=str(tiny_model_dir), dtype="float32"))
    b = open_backend(ModelSpec(name="t16", source=str(tiny_model_dir), dtype="bfloat16"))
    return a, b


def all_logits(backend, ids, rows=None) -> np.ndarray:
    blocks = list(backend.prompt_logits(ids, rows=rows))
    starts = [s for s, _ in blocks]
    assert starts == sorted(starts) and starts[0] == 0
    return np.concatenate([b for _, b in blocks])


def numpy_figures(la: np.ndarray, lb: np.ndarray, targets: list[int]) -> dict:
    """The statistics straight from their definitions, in float64, from saved logits."""
    def logp(x):
        x = x.astype(np.float64)
        return x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))

    pa, pb = logp(la), logp(lb)
    kl = np.array([np.sum(np.exp(pa[i]) * (pa[i] - pb[i])) for i in range(len(pa))])
    agree = la.argmax(1) == lb.argmax(1)
    t = np.array(targets)
    return {"top1_agreement": agree.mean(), "kl_mean": kl.mean(), "kl_median": np.median(kl),
            "kl_p99": np.percentile(kl, 99), "ppl_a": np.exp(-pa[np.arange(len(t)), t].mean()),
            "ppl_b": np.exp(-pb[np.arange(len(t)), t].mean()),
            "first_split": int(np.argmin(agree)) if not agree.all() else None}


def test_transformers_blocks_equal_one_forward_pass(tiny_backend):
    ids = tiny_backend.text_ids(TEXT)
    with torch.inference_mode():
        whole = tiny_backend.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    blocked = all_logits(tiny_backend, ids, rows=7)
    assert blocked.shape == whole.shape
    assert np.abs(blocked - whole).max() < 1e-4
    (start, last), = tiny_backend.prompt_logits(ids, last_only=True, rows=7)
    assert start == len(ids) - 1 and last.shape == (1, whole.shape[1])
    assert np.abs(last[0] - whole[-1]).max() < 1e-4


def test_statistics_equal_independent_numpy(tiny_pair):
    a, b = tiny_pair
    (f,) = text_fidelity(a, b, TEXT)
    ids = a.text_ids(TEXT)
    expected = numpy_figures(all_logits(a, ids[:-1]), all_logits(b, ids[:-1]), ids[1:])
    got = f.to_dict()
    assert got["positions"] == len(ids) - 1
    for key, value in expected.items():
        if key == "first_split":
            assert got[key] == value
        else:
            assert got[key] == pytest.approx(value, abs=1e-6, rel=1e-6), key
    assert got["kl_mean"] > 0  # bf16 differs from float32: the comparison is not trivially zero


def test_chat_reading_scores_the_answer_in_each_format(tiny_pair):
    a, b = tiny_pair
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    reading = reading_of_answer(a, b, "poem", messages, "The sea, the sky.")
    (f,) = score_all(a, b, [reading])
    prompt = a.prompt_ids(messages)
    ids = reading.ids_a
    expected = numpy_figures(all_logits(a, ids[:-1])[len(prompt) - 1:], all_logits(b, ids[:-1])[len(prompt) - 1:],
                             ids[len(prompt):])
    assert f.positions == len(ids) - len(prompt) == len(a.text_ids("The sea, the sky."))
    assert f.to_dict()["kl_mean"] == pytest.approx(expected["kl_mean"], abs=1e-6)
    assert f.to_dict()["ppl_b"] == pytest.approx(expected["ppl_b"], rel=1e-6)


def test_model_against_itself_transformers(tiny_spec):
    a, b = open_backend(tiny_spec), open_backend(tiny_spec)  # two loads: the real two-model path
    presets = [Preset("g", "sky", "Why is the sky blue?"), Preset("g", "sea", "Write a short poem about the sea.")]
    parts = presets_fidelity(a, b, presets, max_new_tokens=12)
    overall = merged(parts).to_dict()
    assert overall["positions"] >= 2 * 11
    assert overall["top1_agreement"] == 1.0 and overall["kl_mean"] == 0.0 and overall["kl_p99"] == 0.0
    assert overall["ppl_a"] == overall["ppl_b"] and overall["texts_parted"] == 0
    assert all(p.first_split is None for p in parts)


def test_model_against_itself_llamacpp_gguf():
    spec = ModelSpec(name="q", source="embedded:smollm2", backend="llamacpp")
    a, b = open_backend(spec), open_backend(spec)
    try:
        (f,) = text_fidelity(a, b, TEXT)
        d = f.to_dict()
        assert d["positions"] == len(a.text_ids(TEXT)) - 1
        assert d["top1_agreement"] == 1.0 and d["kl_mean"] == 0.0 and d["ppl_a"] == d["ppl_b"]
        ids = a.text_ids(TEXT)
        rows = all_logits(a, ids, rows=16)
        assert rows.shape == (len(ids), a.prompt.llm.n_vocab())
        lasts = []
        for _ in range(2):  # from the cached prefix: only the last id is evaluated, alone
            (start, last), = a.prompt_logits(ids, last_only=True)
            assert start == len(ids) - 1 and last.shape == (1, rows.shape[1])
            lasts.append(last[0])
        assert np.array_equal(lasts[0], lasts[1])
        # one id alone runs other llama.cpp kernels than a batch (Q4_1: up to ~0.9 logits apart)
        assert np.abs(lasts[0] - rows[-1]).max() < 0.1 * np.abs(rows[-1]).max()
        # one loaded model on both sides reads its logits once and agrees with itself as well
        (same,) = text_fidelity(a, a, TEXT)
        assert same.to_dict()["kl_max"] == 0.0 and same.positions == f.positions
    finally:
        a.close()
        b.close()


def test_refuses_different_vocabularies(tiny_backend):
    other = open_backend(ModelSpec(name="q", source="embedded:smollm2", backend="llamacpp"))
    try:
        with pytest.raises(UserError, match="do not share a tokenizer"):
            text_fidelity(tiny_backend, other, TEXT)
    finally:
        other.close()


def test_long_text_is_cut_to_the_context_with_a_note(tiny_pair):
    a, b = tiny_pair  # the tiny model's context: 256 tokens
    text = TEXT * 12
    assert len(a.text_ids(text)) > a.context_length + 1
    (f,) = text_fidelity(a, b, text)
    assert f.positions == a.context_length
    assert f"cut to {a.context_length} tokens" in f.note and "not scored" in f.note
    with pytest.raises(UserError, match="context"):
        next(a.prompt_logits(a.text_ids(text)))  # the API itself refuses, with the fix


def test_remote_backends_have_no_logits():
    class Remote(Backend):
        spec = ModelSpec(name="r", source="http://localhost:1/v1", backend="openai")
        count_prompt_tokens = stream = None

    with pytest.raises(UserError, match="no logits"):
        next(Remote().prompt_logits([1, 2]))


def test_command_prints_json_and_refuses_bad_text(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    assert main(["fidelity", str(tiny_model_dir), str(tiny_model_dir), "--dtype-b", "bfloat16",
                 "--text", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["positions"] > 10 and 0 < out["overall"]["top1_agreement"] <= 1
    assert out["parts"][0]["label"] == "t.txt"
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    assert main(["fidelity", str(tiny_model_dir), str(tiny_model_dir), "--text", str(tmp_path / "bad.txt")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_report_has_a_fidelity_section_only_for_one_tokenizer(tiny_model_dir, tmp_path, capsys):
    suite = tmp_path / "suite.toml"
    suite.write_text('[[prompts]]\ngroup = "t"\nlabel = "sky <b>"\ntext = "Why is the sky blue?"\n', encoding="utf-8")
    common = ["report", "--prompts", str(suite), "--no-store", "--max-new-tokens", "8", "--greedy"]
    out = tmp_path / "same"
    assert main([*common, "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir), "--dtype-a", "float32",
                 "--dtype-b", "bfloat16", "--out", str(out)]) == 0, capsys.readouterr().err
    md, page = (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")
    assert "## Token fidelity (B against reference A)" in md and "top-1 agree" in md
    row = next(line for line in md.splitlines() if line.startswith("| sky &lt;b&gt; |"))
    assert int(row.split("|")[2]) > 0 and row.count("%") == 1  # scored positions, agreement
    assert "Token fidelity (B against reference A)" in page and "sky &lt;b&gt;" in page and "<b>" not in page
    out = tmp_path / "other"
    assert main([*common, "--model-a", str(tiny_model_dir), "--model-b", "smollm2-llamacpp", "--out", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Token fidelity" in md and "Not computed:" in md and "do not share a tokenizer" in md


def test_compare_tab_line_measures_the_turn_just_answered():
    from llm_compare.params import GenerationParams
    from llm_compare.pool import ModelPool
    from llm_compare.specs import load_registry
    from llm_compare.ui.handlers import make_fidelity
    from llm_compare.ui.session import AppContext, Conversation, run_turn

    ctx, conv = AppContext(registry=load_registry(), pool=ModelPool()), Conversation()
    measure = make_fidelity(ctx)
    assert measure(conv).startswith("⚠️ no answer from A")
    pair = {"a": "smollm2-fp32", "b": "smollm2-fp32"}
    list(run_turn(ctx, conv, "Name a colour.", pair, GenerationParams(max_new_tokens=8, greedy=True)))
    line = measure(conv)
    n = len(ctx.pool.get(ctx.spec("smollm2-fp32", "a")).text_ids(conv.messages["a"][-1]["content"]))
    assert line.startswith(f"Token fidelity of B to A over A's answer ({n} tokens): top-1 agreement 100.0 %")
    assert "KL mean 0.0000" in line and "greedy choices part never" in line


def test_a_prompt_longer_than_the_context_is_noted_not_an_error(tiny_pair):
    a, b = tiny_pair
    parts = presets_fidelity(a, b, [Preset("g", "long", TEXT * 12), Preset("g", "short", "Why is the sky blue?")],
                             max_new_tokens=6)
    assert parts[0].positions == 0 and "cut to 256 tokens" in parts[0].note and "nothing to score" in parts[0].note
    assert parts[1].positions > 0 and not parts[1].note
    assert "long: cut to 256 tokens" in merged(parts).note
