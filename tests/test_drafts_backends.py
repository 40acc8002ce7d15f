"""Prompt-lookup drafts on the real backends: replies token-identical with and without drafts (greedy, and
sampled for a seed), drafts really accepted (so the test fails if drafting is silently off), and the count
of drafted tokens in the metrics. Cost figures are injected: whether drafting pays on this machine is
the probe's business (tests/test_drafts.py), not these tests'."""

from __future__ import annotations

import pytest

from gguf_helpers import GLM, QWEN
from llm_compare.backends import open_backend
from llm_compare.engine import stream_reply
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

CHEAP = {1: 1.0, 2: 1.02, 4: 1.05, 8: 1.1, 16: 1.2}  # verification about as cheap as a step: drafts pay
LINEAR = {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0, 16: 16.0}  # k tokens cost k steps: drafting cannot pay

REPEATING = [{"role": "user", "content": "Repeat after me: one, two, three, four, five. One, two, three, four, five."}]
legacy = pytest.mark.skipif(not GLM.is_dir(), reason="legacy fixtures not present")


def probe(costs=CHEAP, diff=0.0):
    return {"costs": costs, "max_logit_diff": diff}


def reply(backend, monkeypatch, params, drafts_on, costs=CHEAP, messages=REPEATING, diff=0.0):
    with monkeypatch.context() as m:
        m.setattr(backend, "drafts", drafts_on)
        m.setattr(backend, "draft_probe", lambda: probe(costs, diff))
        *_, last = stream_reply(backend, messages, params)
    return last


def assert_identical_with_drafts(backend, monkeypatch, params, messages=REPEATING):
    plain = reply(backend, monkeypatch, params, False, messages=messages)
    drafted = reply(backend, monkeypatch, params, True, messages=messages)
    assert drafted.text == plain.text
    assert drafted.metrics.new_tokens == plain.metrics.new_tokens
    assert plain.metrics.draft_tokens == 0
    return drafted


def test_tiny_float32_greedy_identical_and_drafts_accepted(tiny_backend, monkeypatch):
    drafted = assert_identical_with_drafts(tiny_backend, monkeypatch, GenerationParams(max_new_tokens=80, greedy=True))
    assert drafted.metrics.draft_tokens > 0


def test_tiny_greedy_with_repetition_penalty_identical(tiny_backend, monkeypatch):
    params = GenerationParams(max_new_tokens=80, greedy=True, repetition_penalty=1.2)
    drafted = assert_identical_with_drafts(tiny_backend, monkeypatch, params)
    assert drafted.metrics.draft_tokens > 0


def test_tiny_seeded_sampling_identical_with_drafts(tiny_backend, monkeypatch):
    accepted = 0
    for seed in range(6):
        params = GenerationParams(max_new_tokens=60, temperature=0.05, top_p=0.9, seed=seed)
        accepted += assert_identical_with_drafts(tiny_backend, monkeypatch, params).metrics.draft_tokens
    assert accepted > 0


def test_no_drafts_where_verification_costs_as_much_as_steps(tiny_backend, monkeypatch):
    last = reply(tiny_backend, monkeypatch, GenerationParams(max_new_tokens=40, greedy=True), True, costs=LINEAR)
    assert last.metrics.draft_tokens == 0 and last.metrics.new_tokens == 40


def test_auto_drafts_only_where_batched_logits_match_one_at_a_time(tiny_backend, monkeypatch):
    from llm_compare import drafts

    params = GenerationParams(max_new_tokens=60, greedy=True)
    for setting, diff, expect_drafts in (("auto", 0.4, False), ("auto", 1e-5, True), ("on", 0.4, True),
                                         ("off", 0.0, False), ("", 0.4, False)):
        monkeypatch.setenv(drafts.DRAFTS_ENV, setting)
        last = reply(tiny_backend, monkeypatch, params, True, diff=diff)
        assert (last.metrics.draft_tokens > 0) == expect_drafts, (setting, diff)


def test_the_probe_measures_this_model(tiny_spec, tmp_path, monkeypatch):
    """A real measurement on the tiny model: every probed row count timed, float32 batched logits equal
    to one-at-a-time ones within the tolerance, cached for the next instance; a failing probe means no drafts."""
    from llm_compare import drafts

    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    found = open_backend(tiny_spec).draft_probe()
    assert sorted(found["costs"]) == list(drafts.PROBE_ROWS) and all(s > 0 for s in found["costs"].values())
    assert found["max_logit_diff"] <= drafts.EXACT_LOGITS
    if (tmp_path / "probes" / "drafts.json").exists():  # not written when measured on a busy machine
        assert open_backend(tiny_spec).draft_probe() == found

    def broken(rows):
        raise MemoryError

    assert drafts.verification_probe("x", 1, broken, lambda: 0.0) is None


def test_stop_ends_a_drafted_reply(tiny_backend, monkeypatch):
    import threading

    stop = threading.Event()
    with monkeypatch.context() as m:
        m.setattr(tiny_backend, "drafts", True)
        m.setattr(tiny_backend, "draft_probe", probe)
        updates = stream_reply(tiny_backend, REPEATING, GenerationParams(max_new_tokens=200, greedy=True), stop)
        for update in updates:
            if update.metrics.new_tokens >= 5:
                stop.set()
        assert update.done and update.finish_reason == "stopped" and update.metrics.new_tokens < 200


@legacy
@pytest.mark.parametrize("dtype", ["float32", "gguf-f32"])
@pytest.mark.parametrize("directory", [GLM, QWEN], ids=["chatglm3", "qwen"])
def test_seed_fixtures_greedy_identical(directory, dtype, monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))  # the gguf-f32 export goes there
    backend = open_backend(ModelSpec(name=directory.name, source=str(directory), dtype=dtype))
    try:
        drafted = assert_identical_with_drafts(backend, monkeypatch, GenerationParams(max_new_tokens=60, greedy=True))
        assert drafted.metrics.draft_tokens > 0
    finally:
        backend.close()


@pytest.mark.slow
def test_embedded_smollm2_float32_quoting_prompt_identical(embedded_backend, monkeypatch):
    """Real weights: a prompt whose answer quotes it, so drafts are right for real reasons."""
    quote = [{"role": "user", "content": "Repeat this sentence exactly: The quick brown fox jumps over the lazy "
                                         "dog while the farmer watches from the old wooden fence."}]
    drafted = assert_identical_with_drafts(embedded_backend, monkeypatch,
                                           GenerationParams(max_new_tokens=48, greedy=True), messages=quote)
    assert drafted.metrics.draft_tokens >= 5


def test_stats_line_and_ask_json_say_how_many_tokens_came_from_drafts(tiny_model_dir, monkeypatch, capsys):
    import json

    from llm_compare import drafts
    from llm_compare.cli import main
    from llm_compare.engine import Metrics, SideState
    from llm_compare.ui.session import format_stats

    monkeypatch.setattr(drafts, "verification_probe", lambda *a, **k: probe())
    args = ["ask", REPEATING[0]["content"], "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir),
            "--dtype-a", "float32", "--dtype-b", "float32", "--greedy", "--max-new-tokens", "60", "--json"]
    runs = {}
    for setting in ("on", "off"):
        monkeypatch.setenv(drafts.DRAFTS_ENV, setting)
        assert main(args) == 0
        runs[setting] = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert all(r["draft_tokens"] > 0 for r in runs["on"]) and all(r["draft_tokens"] == 0 for r in runs["off"])
    assert [r["text"] for r in runs["on"]] == [r["text"] for r in runs["off"]]
    state = SideState("a", "A", status="done", metrics=Metrics(new_tokens=60, draft_tokens=runs["on"][0]["draft_tokens"]))
    assert f"60 new tokens ({runs['on'][0]['draft_tokens']} from drafts)" in format_stats(state)


@pytest.fixture(scope="module")
def exported_f32(tiny_model_dir, tmp_path_factory):
    """The tiny model exported to gguf-f32 and run by llama.cpp (into a private cache)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        backend = open_backend(ModelSpec(name="tiny-f32", source=str(tiny_model_dir), dtype="gguf-f32"))
        yield backend
        backend.close()


def test_gguf_f32_greedy_and_seeded_sampling_identical_with_drafts(exported_f32, monkeypatch):
    drafted = assert_identical_with_drafts(exported_f32, monkeypatch, GenerationParams(max_new_tokens=80, greedy=True))
    assert drafted.metrics.draft_tokens > 0
    penalised = GenerationParams(max_new_tokens=80, greedy=True, repetition_penalty=1.2)
    assert assert_identical_with_drafts(exported_f32, monkeypatch, penalised).metrics.draft_tokens > 0
    accepted = 0
    for seed in range(4):
        params = GenerationParams(max_new_tokens=60, temperature=0.05, top_p=0.9, seed=seed)
        accepted += assert_identical_with_drafts(exported_f32, monkeypatch, params).metrics.draft_tokens
    assert accepted > 0


def test_gguf_f32_probe_finds_batched_logits_exact(exported_f32, monkeypatch, tmp_path):
    from llm_compare import drafts

    monkeypatch.setenv("LLM_COMPARE_CACHE", str(tmp_path))
    monkeypatch.setattr(exported_f32, "_draft_probe", None)
    found = exported_f32.draft_probe()
    assert sorted(found["costs"]) == list(drafts.PROBE_ROWS) and found["max_logit_diff"] <= drafts.EXACT_LOGITS


@pytest.mark.slow
def test_plain_gguf_drafts_through_llama_cpp_sampler(monkeypatch):
    """The embedded SmolLM2 GGUF on the llamacpp backend: drafts verified by llama.cpp's own sampler chain.
    Its 4-bit kernels compute one row differently from a batch, so replies are compared only where they
    must agree (greedy, a prompt quoted word for word) and drafting must really have happened."""
    from llm_compare import drafts

    monkeypatch.setenv(drafts.DRAFTS_ENV, "on")
    backend = open_backend(ModelSpec(name="smollm2-llamacpp", source="embedded:smollm2", backend="llamacpp"))
    try:
        quote = [{"role": "user", "content": "Repeat this sentence exactly: The quick brown fox jumps over the "
                                             "lazy dog while the farmer watches from the old wooden fence."}]
        drafted = reply(backend, monkeypatch, GenerationParams(max_new_tokens=40, greedy=True), True, messages=quote)
        assert drafted.metrics.draft_tokens >= 3 and drafted.text
        monkeypatch.setenv(drafts.DRAFTS_ENV, "auto")  # not exact: "auto" leaves it alone
        assert reply(backend, monkeypatch, GenerationParams(max_new_tokens=20, greedy=True), True, messages=quote,
                     diff=0.5).metrics.draft_tokens == 0
        sampled = [reply(backend, monkeypatch, GenerationParams(max_new_tokens=30, seed=3), True, messages=quote,
                         diff=0.0).text for _ in range(2)]
        assert sampled[0] == sampled[1]  # a seed still gives one reply
    finally:
        backend.close()


@pytest.mark.parametrize("which", ["tiny", "gguf-f32"])
def test_drafts_on_top_of_prefix_reuse_keep_the_next_turn_identical(which, tiny_backend, exported_f32, monkeypatch):
    """A drafted reply leaves its cache for the next turn (kv_states): that turn, drafted and reusing it,
    equals the same turn answered fresh without drafts or reuse."""
    backend = tiny_backend if which == "tiny" else exported_f32
    params = GenerationParams(max_new_tokens=40, greedy=True)
    first = reply(backend, monkeypatch, params, True)
    turn = REPEATING + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Again: one, two."}]
    drafted = reply(backend, monkeypatch, params, True, messages=turn)
    assert drafted.metrics.reused_tokens > 0 and drafted.metrics.draft_tokens > 0
    monkeypatch.setattr(backend, "reuse", False)
    fresh = reply(backend, monkeypatch, params, False, messages=turn)
    assert drafted.text == fresh.text and drafted.metrics.new_tokens == fresh.metrics.new_tokens


def test_verification_passes_multiply_few_rows_weights_first_and_nothing_else_changes():
    """Only bias-free float32 layers switch; only a verification pass over 2-6 rows takes `weight @ x.T`, and
    its rows match F.linear's to float rounding; everything else is F.linear bit for bit."""
    import torch
    import torch.nn.functional as F

    from llm_compare.backends import drafting

    layers = [torch.nn.Linear(64, 96, bias=False), torch.nn.Linear(64, 96), torch.nn.Linear(64, 96, bias=False).bfloat16()]
    assert drafting.use_few_rows_linear(torch.nn.Sequential(*layers)) == 1
    assert [type(m) is torch.nn.Linear for m in layers] == [False, True, True]
    head, gen = layers[0], torch.Generator().manual_seed(0)
    for rows, verifying in ((4, True), (4, False), (1, True), (8, True)):
        x = torch.randn(1, rows, 64, generator=gen)
        drafting._verifying.on = verifying
        try:
            got = head(x)
        finally:
            drafting._verifying.on = False
        want = F.linear(x, head.weight)
        assert got.shape == want.shape == (1, rows, 96)
        if verifying and drafting.FEW_ROWS[0] <= rows <= drafting.FEW_ROWS[1]:
            assert torch.allclose(got, want, atol=1e-5)
        else:
            assert torch.equal(got, want)
