"""The transformers backend's decode speed-up (`MatvecLinear`) leaves outputs unchanged."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from llm_compare.cpu_probe import matvec_pays
from llm_compare.backends.transformers import MatvecLinear, TransformersBackend, use_matvec_for_decode
from llm_compare.loading import load_model
from llm_compare.params import GenerationParams
from llm_compare.specs import ModelSpec
from llm_compare.threads import use_torch_threads

MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("width", [96, 576, 4096])
def test_decode_path_is_bitwise_equal_to_nn_linear_for_bf16(bias, width):
    """Bias-free layers switch to torch.mv; layers with a bias stay nn.Linear (addmv was 10x slower
    without native bf16, and mv + bias rounds twice): either way the output is the layer's own."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(width, width + 64, bias=bias).to(torch.bfloat16)
    one, many = torch.randn(1, 1, width, dtype=torch.bfloat16), torch.randn(1, 7, width, dtype=torch.bfloat16)
    expected_one, expected_many = layer(one), layer(many)
    switched = use_matvec_for_decode(layer)
    assert switched == (0 if bias else int(matvec_pays(width + 64, width)))
    assert isinstance(layer, MatvecLinear) == bool(switched)
    assert torch.equal(layer(one), expected_one) and torch.equal(layer(many), expected_many)


def test_mv_then_bias_would_round_twice():
    """Why biased layers are not switched: mv + bias differs from nn.Linear's single rounding."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(576, 576).to(torch.bfloat16)
    x = torch.randn(576, dtype=torch.bfloat16)
    assert not torch.equal(torch.mv(layer.weight, x) + layer.bias, layer(x[None])[0])


def test_only_bias_free_bf16_linears_are_switched():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8).half(), torch.nn.Linear(8, 8).bfloat16(),
                                torch.nn.Linear(8, 8, bias=False).bfloat16())
    assert use_matvec_for_decode(model, pays=lambda o, i: True) == 1
    assert [type(m).__name__ for m in model] == ["Linear", "Linear", "Linear", "MatvecLinear"]
    assert use_matvec_for_decode(torch.nn.Linear(8, 8, bias=False).bfloat16(), pays=lambda o, i: False) == 0


def test_weight_bytes_counts_int8_buffers_and_tied_weights_once():
    from llm_compare.backends.transformers import tensor_bytes
    from llm_compare.loading.quantize import quantize_int8

    torch.manual_seed(0)
    small, large = (torch.nn.Sequential(torch.nn.Linear(64, n, bias=False), torch.nn.Linear(n, 64, bias=False))
                    for n in (64, 256))
    before = [tensor_bytes(m) for m in (small, large)]
    for m in (small, large):
        m.get_output_embeddings = lambda: None  # what quantize_int8 asks a transformers model
        quantize_int8(m)
    after = [tensor_bytes(m) for m in (small, large)]
    assert before == [2 * 64 * 64 * 4, 2 * 64 * 256 * 4]  # float32: 4 bytes a weight
    # int8: 1 byte a weight plus one bf16 scale per output row, all of it buffers
    assert after == [2 * 64 * 64 + 2 * (64 + 64), 2 * 64 * 256 + 2 * (256 + 64)]
    tied = torch.nn.Linear(8, 8, bias=False)
    model = torch.nn.ModuleList([tied, torch.nn.Linear(8, 8, bias=False)])
    model[1].weight = tied.weight
    assert tensor_bytes(model) == 8 * 8 * 4


def standard_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def test_greedy_reply_unchanged_by_matvec_decode_and_the_head_sees_standard_strides():
    """The backend's decode changes (mv where it pays, a re-viewed input to the output head) leave
    the greedy reply as plain `generate` makes it, and the head never gets the prompt-strided last row."""
    spec = ModelSpec(name="smollm2-bf16", source="embedded:smollm2", dtype="bfloat16", threads=1)
    loaded = load_model(spec)
    ids = torch.tensor([loaded.chat_format.encode(MESSAGES)])

    def generate_plainly():  # with the backend's one thread: a bf16 sum split another way may flip a near tie
        use_torch_threads(spec.threads)
        with torch.inference_mode():
            return loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                         min_new_tokens=24, do_sample=False, pad_token_id=0)

    with ThreadPoolExecutor(1) as worker:
        plain = worker.submit(generate_plainly).result()
    backend = TransformersBackend(spec, loaded)  # switches the linears where mv pays on this CPU
    switched = [m for m in backend.model.modules() if isinstance(m, MatvecLinear)]
    assert all(matvec_pays(m.out_features, m.in_features) for m in switched)
    seen = []  # registered after the backend's own hook, so it sees what the head multiplies
    backend.model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    chunks = list(backend.stream(MESSAGES, GenerationParams(max_new_tokens=24, greedy=True), threading.Event()))
    text = "".join(c.text for c in chunks)
    assert text == loaded.tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(seen) >= 24 and all(x.stride() == standard_strides(x.shape) for x in seen)
