"""Token fidelity of gguf-* exports against the float32 reference: the order of the types (f16 closest,
then q8_0, then q4_k_m) on a tiny Llama and on the embedded SmolLM2, self-comparison on the exported
path, and the seed formats (ChatGLM3, Qwen-1) through their own tokenizers."""

from __future__ import annotations

import pytest

from gguf_helpers import GLM, QWEN, build_wide_model
from llm_compare.backends import open_backend
from llm_compare.fidelity import (check_same_tokenizer, greedy_answer, merged, presets_fidelity, reading_of_answer,
                                  score_all, text_fidelity)
from llm_compare.fidelity_view import table_lines
from llm_compare.presets import Preset, load_suite
from llm_compare.specs import ModelSpec
from llm_compare.turn import messages_for

TEXT = ("The sky is blue because air scatters short wavelengths of sunlight more than long ones. "
        "Write a short poem about the sea, then explain its rhythm in one sentence. def add(a, b): return a + b")
TYPES = ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_COMPARE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def spec(directory, dtype: str) -> ModelSpec:
    return ModelSpec(name=f"{directory.name}-{dtype}", source=str(directory), dtype=dtype, label=dtype)


def figures_against(reference, dtypes, directory, score) -> dict:
    out = {}
    for dtype in dtypes:
        backend = open_backend(spec(directory, dtype))
        try:
            out[dtype] = score(reference, backend)
            out[dtype].label = backend.label
        finally:
            backend.close()
    return out


def assert_in_order(figures: dict) -> None:
    kl = [figures[t].to_dict()["kl_mean"] for t in TYPES]
    agree = [figures[t].to_dict()["top1_agreement"] for t in TYPES]
    assert 0 < kl[0] < kl[1] < kl[2], kl
    assert agree[0] >= agree[1] >= agree[2], agree


def test_exported_model_against_itself(tmp_path):
    directory = build_wide_model(tmp_path / "wide")
    a, b = open_backend(spec(directory, "gguf-q8_0")), open_backend(spec(directory, "gguf-q8_0"))
    try:
        (f,) = text_fidelity(a, b, TEXT)
        assert f.positions == len(a.text_ids(TEXT)) - 1
        assert f.to_dict()["top1_agreement"] == 1.0 and f.to_dict()["kl_max"] == 0.0
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_tiny_llama_types_keep_their_order(tmp_path):
    directory = build_wide_model(tmp_path / "wide")
    reference = open_backend(spec(directory, "float32"))
    figures = figures_against(reference, TYPES, directory, lambda a, b: text_fidelity(a, b, TEXT)[0])
    print("\n".join(table_lines([figures[t] for t in TYPES])))
    assert_in_order(figures)


@pytest.mark.slow
@pytest.mark.parametrize("directory", [GLM, QWEN], ids=["chatglm3", "qwen"])
def test_seed_formats_against_their_exports(directory):
    """Prompt ids through ChatGLM3's / Qwen-1's own tokenizer and chat format on both sides; the
    float32 export is closer to the float32 directory than the q8_0 export."""
    if not directory.is_dir():
        pytest.skip("legacy fixtures not present")
    reference = open_backend(spec(directory, "float32"))
    presets = [Preset("t", "seed", load_suite("seeds")[1][0].text)]
    figures = figures_against(reference, ("gguf-f32", "gguf-q8_0"), directory,
                              lambda a, b: presets_fidelity(a, b, presets, max_new_tokens=12)[0])
    for f in figures.values():
        d = f.to_dict()
        assert d["positions"] > 0 and d["kl_mean"] >= 0 and d["ppl_b"] > 0  # the answer text re-read: not always 12 ids
    assert figures["gguf-f32"].to_dict()["kl_mean"] < figures["gguf-q8_0"].to_dict()["kl_mean"]
    assert figures["gguf-f32"].to_dict()["top1_agreement"] == 1.0


@pytest.mark.slow
def test_embedded_smollm2_figures(capsys):
    """float32 reference; bfloat16 and llama.cpp Q4_1 (the shipped file) printed for the README, and
    the converted directory exported to every gguf-* type, in order."""
    from llm_compare.loading import embedded_path
    from llm_compare.loading.gguf.cache import convert_gguf

    directory = convert_gguf(embedded_path("smollm2"))
    reference = open_backend(spec(directory, "float32"))
    presets = load_suite("English")[1]
    answers = [(p.label, messages_for(p.text), greedy_answer(reference, messages_for(p.text), 128)) for p in presets]

    def score(a, b):
        check_same_tokenizer(a, b)
        return merged(score_all(a, b, [reading_of_answer(a, b, *item) for item in answers]), b.label)

    figures = figures_against(reference, ("bfloat16", *TYPES), directory, score)
    q4_1 = open_backend(ModelSpec(name="q4_1", source="embedded:smollm2", backend="llamacpp", label="llama.cpp Q4_1"))
    figures["q4_1"] = score(reference, q4_1)
    figures["q4_1"].label = q4_1.label
    q4_1.close()
    with capsys.disabled():
        print("\nSmolLM2-135M-Instruct against float32, A's greedy answers to the English presets:")
        print("\n".join(table_lines(list(figures.values()))))
    assert_in_order(figures)
    assert figures["bfloat16"].positions == figures["q4_1"].positions > 100
