"""The transformers backend's decode speed-up (`MatvecLinear`) leaves outputs unchanged."""

from __future__ import annotations

import threading

import pytest
import torch

from llm_compare.backends.transformers import MatvecLinear, TransformersBackend, use_matvec_for_decode
from llm_compare.loading import load_model
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec

MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


@pytest.mark.parametrize("bias", [False, True])
def test_matvec_linear_is_bitwise_equal_for_bf16(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 160, bias=bias).to(torch.bfloat16)
    one, many = torch.randn(1, 1, 96, dtype=torch.bfloat16), torch.randn(1, 7, 96, dtype=torch.bfloat16)
    expected_one, expected_many = layer(one), layer(many)
    assert use_matvec_for_decode(layer) == 1 and isinstance(layer, MatvecLinear)
    assert torch.equal(layer(one), expected_one) and torch.equal(layer(many), expected_many)


def test_only_bf16_linears_are_switched():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8).half(), torch.nn.Linear(8, 8).bfloat16())
    assert use_matvec_for_decode(model) == 1
    assert [type(m).__name__ for m in model] == ["Linear", "Linear", "MatvecLinear"]


def test_greedy_reply_unchanged_by_matvec_decode():
    spec = ModelSpec(name="smollm2-bf16", source="embedded:smollm2", dtype="bfloat16", threads=1)
    loaded = load_model(spec)
    ids = torch.tensor([loaded.chat_format.encode(MESSAGES)])
    with torch.inference_mode():
        plain = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                      min_new_tokens=24, do_sample=False, pad_token_id=0)
    backend = TransformersBackend(spec, loaded)  # switches the linears
    assert any(isinstance(m, MatvecLinear) for m in backend.model.modules())
    chunks = list(backend.stream(MESSAGES, GenerationParams(max_new_tokens=24, greedy=True), threading.Event()))
    text = "".join(c.text for c in chunks)
    assert text == loaded.tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)
