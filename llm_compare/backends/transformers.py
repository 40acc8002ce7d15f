"""transformers backend: `generate()` in a worker thread, a streamer as the only channel back.

Three small pieces make it measurable and controllable:
- `CountingStreamer` counts the tokens behind each text piece and stamps the first token's time
  (a word-buffered streamer would otherwise delay the visible first token), and never emits half
  a UTF-8 character (streamed Chinese stays unbroken).
- `StopOnEvent` ends generation within one token of `stop.set()`.
- `SeededSampler` samples with its own `torch.Generator`, so two sampled streams running at once
  are each reproducible from their seed (torch's global RNG would interleave them).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria, TextIteratorStreamer

from llm_compare.backends.base import TUNABLE, Backend, Chunk, Messages, run_in_worker
from llm_compare.params import GenerationParams
from llm_compare.threads import threads_for_stream, use_torch_threads

class CountingStreamer(TextIteratorStreamer):
    def __init__(self, tokenizer, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt=True, **decode_kwargs)
        self.pending_tokens = 0
        self.first_token_at: float | None = None

    def put(self, value):
        if value.dim() > 1:
            value = value[0]
        if self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.pending_tokens += value.numel()
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its other bytes
            return
        if text.endswith("\n"):
            # keep the newline's token: sentencepiece drops a leading "▁" at the start of a decode,
            # so restarting from an empty cache would lose the space (or indentation) after it
            printable, self.token_cache = text[self.print_len :], self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif text and self._is_chinese_char(ord(text[-1])):
            printable = text[self.print_len :]
            self.print_len += len(printable)
        else:
            printable = text[self.print_len : text.rfind(" ") + 1]
            self.print_len += len(printable)
        if printable:
            self.on_finalized_text(printable)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        n, self.pending_tokens = self.pending_tokens, 0
        if text or n:  # the end of the stream is signalled by the worker runner (base.run_in_worker)
            self.text_queue.put((text, n))


class StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class SeededSampler(LogitsProcessor):
    """Temperature + top-p sampling from a private generator; leaves a one-hot for greedy search."""

    def __init__(self, temperature: float, top_p: float, seed: int | None):
        self.temperature, self.top_p = temperature, top_p
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __call__(self, input_ids, scores):
        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = (sorted_p.cumsum(-1) - sorted_p) > self.top_p  # keep the smallest set reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        choice = torch.multinomial(probs, 1, generator=self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, choice, 0.0)


def generation_kwargs(chat_format, tokenizer, params: GenerationParams) -> dict:
    """Everything `generate` needs besides inputs, from `params` alone: the model's generation_config is
    not consulted here (its recommendations reach `params` through engine.side_params, visibly)."""
    eos = list(chat_format.stop_token_ids) or None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    config = GenerationConfig(
        max_new_tokens=params.max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=params.repetition_penalty,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    processors = [] if params.greedy else [SeededSampler(params.temperature, params.top_p, params.seed)]
    return {"generation_config": config, "logits_processor": processors}


class MatvecLinear(torch.nn.Linear):
    """nn.Linear that multiplies a single row with `torch.addmv`/`torch.mv`.

    While decoding, every linear layer sees one token. For bf16 weights torch's matmul path for
    one row is 1.3-4x slower than its matrix-vector kernel (bench/backends.py --experiments:
    SmolLM2 bf16 decode 1.3-1.65x faster); for bf16 the results are bitwise identical, so greedy text
    does not change (fp16 differs in the last bits and fp32 gains nothing: both keep nn.Linear).
    Prefill (several rows) keeps `F.linear`.
    """

    def forward(self, x):
        if x.numel() != self.in_features or x.dtype != self.weight.dtype:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        row = x.reshape(-1)
        y = torch.mv(self.weight, row) if self.bias is None else torch.addmv(self.bias, self.weight, row)
        return y.view(*x.shape[:-1], self.out_features)


def use_matvec_for_decode(model) -> int:
    """Switch the model's bf16 nn.Linear layers to `MatvecLinear` in place; returns how many."""
    switched = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.bfloat16:
            module.__class__ = MatvecLinear
            switched += 1
    return switched


class TransformersBackend(Backend):
    def __init__(self, spec, loaded):
        self.spec = spec
        self.loaded = loaded
        self.model, self.tokenizer, self.chat_format = loaded.model, loaded.tokenizer, loaded.chat_format
        self.context_length = loaded.context_length
        self.load_seconds = loaded.load_seconds
        self.resident_bytes = loaded.resident_bytes
        self.concurrent_streams = 1  # set by the caller (engine policy) before streaming
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        use_matvec_for_decode(self.model)
        self.drops_last_token = getattr(self.chat_format, "drops_last_token", False)

    def recommended_generation(self) -> dict:
        """The model's generation_config.json values (e.g. Qwen's repetition_penalty 1.1), then the registry's."""
        config = getattr(self.model, "generation_config", None)
        own = {k: getattr(config, k) for k in TUNABLE if getattr(config, k, None) is not None}
        return {**own, **super().recommended_generation()}

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(self.chat_format.encode(messages))

    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event) -> Iterator[Chunk]:
        ids = self.chat_format.encode(messages)
        input_ids = torch.tensor([ids], dtype=torch.long)
        streamer = CountingStreamer(self.tokenizer, skip_special_tokens=True)
        kwargs = generation_kwargs(self.chat_format, self.tokenizer, params)
        n_threads = threads_for_stream(self.spec, self.concurrent_streams, self.weight_bytes)

        def generate(_emit):  # the streamer is the channel back: it feeds its own queue
            use_torch_threads(n_threads)  # per worker; see threads.use_torch_threads
            with torch.inference_mode():
                self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=streamer,
                    stopping_criteria=[StopOnEvent(stop)],
                    **kwargs,
                )

        first = True
        for text, n in run_in_worker(generate, stop, f"generate-{self.spec.name}", out=streamer.text_queue):
            yield Chunk(text=text, tokens=n, first_token_at=streamer.first_token_at,
                        prompt_tokens=len(ids) if first else None)
            first = False

    def finish_text(self, text: str) -> str:
        return self.chat_format.clean_reply(text)
