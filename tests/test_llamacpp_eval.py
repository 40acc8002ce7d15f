"""The shared llama.cpp evaluation primitive (backends/llamacpp_eval.py): logits after reusing part
of the KV cache equal a fresh evaluation of the full ids, on the embedded SmolLM2 GGUF and on a
tiny model exported to gguf-f32; the cache holds exactly the requested ids; saved sequences restore.
"""

from __future__ import annotations

import numpy as np
import pytest

from gguf_helpers import gguf_logits
from llm_compare.backends.llamacpp_eval import (
    common_prefix, evaluate, evaluate_blocks, held_ids, restore_sequence, saved_sequence,
)

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module", params=["smollm2", "tiny-gguf-f32"])
def model_path(request, tiny_model_dir, private_cache):
    if request.param == "smollm2":
        from llm_compare.loading import embedded_path

        return embedded_path("smollm2")
    from llm_compare.loading import resolve_source
    from llm_compare.loading.gguf.export import exported_gguf

    return exported_gguf(resolve_source(str(tiny_model_dir)), "gguf-f32")


def open_llama(path, n_batch=512):
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=256, n_batch=n_batch, n_threads=1, verbose=False,
                           type_k=0, type_v=0, flash_attn=False)


def some_ids(llm, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(10, min(llm.n_vocab(), 300), size=n).tolist()


def close(a, b):
    """Equal up to float rounding (a batch split may change the kernels' summation order)."""
    scale = max(1.0, float(np.abs(b).max()))
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= 1e-4 * scale


def fresh_last(path, ids):
    """The last id's logits from a new context that evaluates all of `ids` (llama.cpp then computes
    the last layer for that row alone, whose rounding differs from all-rows mode: compare like with like)."""
    llm = open_llama(path)
    try:
        return evaluate(llm, ids, reuse=False).logits
    finally:
        llm.close()


@pytest.fixture(scope="module")
def llm(model_path):
    llm = open_llama(model_path)
    yield llm
    llm.close()


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0


def test_reused_prefix_gives_the_fresh_logits(llm, model_path):
    """Grow, shrink (Regenerate), edit in the middle, and repeat a request: each time only the
    ids after the common prefix are evaluated and the logits are a fresh evaluation's."""
    ids = some_ids(llm, 90)
    edited = ids[:20] + [ids[20] + 1] + ids[21:60]
    first = evaluate(llm, ids[:40], reuse=False)
    assert first.reused == 0 and close(first.logits, fresh_last(model_path, ids[:40]))
    reference_edited = fresh_last(model_path, edited)
    steps = [(ids[:90], 40, fresh_last(model_path, ids)),
             (ids[:70], 69, fresh_last(model_path, ids[:70])),  # Regenerate: one id re-evaluated
             (edited, 20, reference_edited), (edited, 59, reference_edited)]
    for request, reused, want in steps:
        out = evaluate(llm, request)
        assert out.reused == reused
        assert held_ids(llm) == request
        assert close(out.logits, want)


def test_all_rows_equal_an_independent_full_evaluation(llm, model_path):
    ids = some_ids(llm, 70, seed=1)
    reference = gguf_logits(model_path, ids, list(range(70))).numpy()
    fresh = evaluate(llm, ids, all_rows=True, reuse=False)
    assert fresh.reused == 0 and fresh.logits.shape == reference.shape
    assert close(fresh.logits, reference)
    evaluate(llm, ids[:30])
    tail = evaluate(llm, ids, all_rows=True)
    assert tail.reused == 30 and close(tail.logits, reference[30:])


def test_blocks_keep_memory_to_one_batch(model_path):
    llm = open_llama(model_path, n_batch=16)
    try:
        ids = some_ids(llm, 50, seed=2)
        blocks = list(evaluate_blocks(llm, ids, all_rows=True, reuse=False))
        assert [pos for pos, _ in blocks] == [0, 16, 32, 48]
        assert max(len(rows) for _, rows in blocks) == 16
        reference = gguf_logits(model_path, ids, list(range(50))).numpy()
        assert close(np.concatenate([rows for _, rows in blocks]), reference)
    finally:
        llm.close()


def test_saved_sequence_restores_another_conversation(llm, model_path):
    a, b = some_ids(llm, 60, seed=3), some_ids(llm, 50, seed=4)
    evaluate(llm, a)
    saved = saved_sequence(llm)
    assert saved.ids == a and saved.nbytes > 0
    evaluate(llm, b, reuse=False)
    assert restore_sequence(llm, saved) and held_ids(llm) == a
    longer = a + some_ids(llm, 10, seed=5)
    out = evaluate(llm, longer)
    assert out.reused == 60
    assert close(out.logits, fresh_last(model_path, longer))
