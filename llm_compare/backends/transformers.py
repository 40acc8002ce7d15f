"""transformers backend: `generate()` in a worker thread, a streamer as the only channel back.

Three small pieces make it measurable and controllable:
- `CountingStreamer` counts the tokens behind each text piece and stamps the first token's time
  (a word-buffered streamer would otherwise delay the visible first token); its text comes from
  the shared `detokenize.Detokenizer` (streamed Chinese stays unbroken).
- `StopOnEvent` ends generation within one token of `stop.set()`.
- `SeededSampler` (`sampling.py`) samples with its own `torch.Generator`, so two sampled streams
  running at once are each reproducible from their seed (torch's global RNG would interleave them).

A reply's `DynamicCache` is kept (backends/kv_states.py): the next request whose ids share a
prefix with it crops it to that prefix and passes it to `generate`, which evaluates only the rest.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from typing import Iterator, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from llm_compare import cpu_probe, drafts
from llm_compare.architecture.tokens import plain_ids
from llm_compare.backends import detokenize
from llm_compare.backends.base import (Backend, Chunk, LogitBlock, Messages, block_rows, check_logit_ids,
                                       run_in_worker)
from llm_compare.backends.drafting import TorchForward, draft_length, measured_probe, torch_decode
from llm_compare.backends.kv_states import SavedCaches, is_another
from llm_compare.backends.reply_ids import ReplyIds
from llm_compare.backends.sampling import SeededSampler
from llm_compare.loading.memory import available_bytes, saved_caches_budget
from llm_compare.loading.size_model import kv_cache_bytes, kv_cache_type
from llm_compare.params import TUNABLE, GenerationParams
from llm_compare.progress import status
from llm_compare.specs import CONTEXT_TOKENS
from llm_compare.threads import LLAMACPP_RAN, threads_for_stream, use_torch_threads

class CountingStreamer(BaseStreamer):
    """Decoded text pieces with the number of tokens behind each, into `text_queue` as (text, tokens,
    threads, drafted): `threads` is the torch thread count of the generating thread, read in it
    (generate() calls the streamer there), so a pane shows the count the stream really runs with.

    Written on transformers' BaseStreamer rather than TextIteratorStreamer, whose body would have to
    be copied to count tokens and stamp the first token's time; the text comes from the shared
    `detokenize.Detokenizer`, which never emits half a UTF-8 character.
    """

    def __init__(self, tokenizer):
        self.text = detokenize.for_tokenizer(tokenizer)
        self.text_queue: queue.Queue = queue.Queue()
        self.prompt_pending = True  # generate() first puts the prompt ids: skipped
        self.pending_tokens = 0
        self.drafted_pending = 0  # of the pending tokens, how many came from drafts (drafts.decode)
        self.first_token_at: float | None = None

    def put(self, value):
        if value.dim() > 1:
            value = value[0]
        if self.prompt_pending:
            self.prompt_pending = False
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.pending_tokens += value.numel()
        printable = self.text.feed(value.tolist())
        if printable:
            self._emit(printable)

    def end(self):
        """The rest of the text; the end of the stream itself is signalled by base.run_in_worker."""
        self._emit(self.text.flush())

    def _emit(self, text: str) -> None:
        n, self.pending_tokens = self.pending_tokens, 0
        drafted, self.drafted_pending = self.drafted_pending, 0
        if text or n:
            self.text_queue.put((text, n, torch.get_num_threads(), drafted))


class StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


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
        return_dict_in_generate=True,  # the reply's cache comes back with it (kept for the next turn)
    )
    processors = [] if params.greedy else [SeededSampler(params.temperature, params.top_p, params.seed)]
    return {"generation_config": config, "logits_processor": processors}


class MatvecLinear(torch.nn.Linear):
    """A bias-free bf16 nn.Linear that multiplies a single row with `torch.mv`.

    While decoding, every linear layer sees one token. For bf16 weights torch's matmul path for one
    row was 1.3-4x slower than its matrix-vector kernel on an Intel box (bench/backends.py
    --experiments: SmolLM2 bf16 decode 1.3-1.65x faster); elsewhere it is not faster, and on a Zen 4
    with avx512_bf16 mv differed from F.linear in a few elements at some widths. So a layer is
    switched only where the CPU probe found mv faster *and* bitwise equal at that shape
    (`cpu_probe.matvec_pays`), and greedy text does not change. Layers with a bias (Qwen-1's
    and ChatGLM3's q/k/v) stay nn.Linear: `torch.addmv(bias, W, x)` ran 10x slower than `mv` in bf16
    on a CPU without native bf16, and `mv` then `+ bias` rounds twice (up to one bf16 step off
    nn.Linear, which adds the bias before rounding); nn.Linear with its bias is as fast as without
    (bench/dtypes.py --layer). fp16 differs in the last bits and fp32 gains nothing: both keep
    nn.Linear. Prefill (several rows) keeps `F.linear`.
    """

    def forward(self, x):
        if x.numel() != self.in_features or x.dtype != self.weight.dtype:
            return torch.nn.functional.linear(x, self.weight)
        return torch.mv(self.weight, x.reshape(-1)).view(*x.shape[:-1], self.out_features)


def use_matvec_for_decode(model, pays=cpu_probe.matvec_pays) -> int:
    """Switch bias-free bf16 nn.Linear layers to `MatvecLinear` where `pays(out, in)`; returns how many."""
    switched = 0
    for module in model.modules():
        if (type(module) is torch.nn.Linear and module.weight.dtype == torch.bfloat16 and module.bias is None
                and pays(module.out_features, module.in_features)):
            module.__class__ = MatvecLinear
            switched += 1
    return switched


def canonical_strides(module, args):
    """Forward pre-hook: the same input, re-viewed with the standard strides of its shape (no copy).

    `generate` feeds the output head `hidden[:, -1:, :]`: shape [1, 1, hidden] but a batch stride of
    the whole prompt. torch calls that contiguous, yet its bf16 matmul then ran 50-100x slower: 11 s
    instead of 0.12 s for Qwen-7B's 151936 x 4096 head on an AMD EPYC (Zen 4), the same result to
    the bit. That was most of the first-token time of bf16 and int8 (whose head stays bf16) at 7B widths.
    """
    x = args[0]
    if x.dim() > 2 and x.is_contiguous():
        return (x.reshape(-1, x.shape[-1]).view(x.shape), *args[1:])
    return None


def tensor_bytes(model) -> int:
    """Every byte of the model's weights: parameters and buffers (int8 weights are buffers), shared ones once."""
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def conversation_budget(model) -> int:
    """Bytes of saved conversation caches this model keeps (loading.memory.saved_caches_budget), from
    its KV size per token (K and V of every layer, in the model's dtype) at CONTEXT_TOKENS tokens."""
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(c, "num_attention_heads", 0) or 0
    head_dim = getattr(c, "head_dim", None) or (getattr(c, "hidden_size", 0) // heads if heads else 0)
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    values = 2 * (getattr(c, "num_hidden_layers", 0) or 0) * kv_heads * head_dim
    cache = kv_cache_type(str(model.dtype).removeprefix("torch."))
    return saved_caches_budget(kv_cache_bytes(values, CONTEXT_TOKENS, cache), available_bytes())


def croppable(cache) -> bool:
    """Whether every layer keeps all its past (a sliding-window or linear-attention layer cannot be
    cut back to an earlier position)."""
    from transformers.cache_utils import DynamicLayer

    return bool(getattr(cache, "layers", None)) and all(type(layer) is DynamicLayer for layer in cache.layers)


def cache_for(saved: SavedCaches, ids: list[int]):
    """The saved cache holding most of `ids`, cut back to that prefix (at least one id left to
    evaluate), and how many ids it keeps; (None, 0) when none holds any."""
    entry, n = saved.take(ids)
    n = min(n, len(ids) - 1)
    if entry is None or n <= 0:
        return None, 0
    # another conversation's cache stays saved (SavedCaches.take): this request works on a copy
    cache = copy.deepcopy(entry.state) if is_another(len(entry.ids), n, len(ids)) else entry.state
    cache.crop(n - cache.get_seq_length())
    return cache, n


def keep_cache(saved: SavedCaches, cache, sequence: list[int]) -> None:
    """Save a finished reply's cache with the ids it holds (prompt and reply but the last token,
    which generate() never feeds back)."""
    if cache is None or not croppable(cache):
        return
    n = cache.get_seq_length()
    nbytes = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
                 if t is not None)
    saved.put(sequence[:n], cache, nbytes)


class TransformersBackend(Backend):
    def __init__(self, spec, loaded):
        self.spec = spec
        self.loaded = loaded
        self.model, self.tokenizer, self.chat_format = loaded.model, loaded.tokenizer, loaded.chat_format
        self.context_length = loaded.context_length
        self.load_seconds = loaded.load_seconds
        self.resident_bytes = loaded.resident_bytes
        self.weight_bytes = tensor_bytes(self.model)
        use_matvec_for_decode(self.model)
        head = self.model.get_output_embeddings()
        if head is not None:
            head.register_forward_pre_hook(canonical_strides)
        self.drops_last_token = getattr(self.chat_format, "drops_last_token", False)
        self._best_threads: dict[bool, int] = {}
        self.drafts = True  # prompt lookup (drafts.py) where it pays and keeps replies (LLM_COMPARE_DRAFTS)
        self._draft_probe: dict | None = None
        self.reuse = True  # False: every prompt is evaluated in full (bench/conversation.py's baseline)
        self.saved = SavedCaches(conversation_budget(self.model))
        self.replies = ReplyIds()  # each reply's generated ids, spliced into the next prompt (reply_ids.py)

    def best_threads(self) -> int:
        """Measured once per machine, size and dtype, and again once llama.cpp ran here (shared OpenMP)."""
        after_llamacpp = LLAMACPP_RAN.is_set()
        if after_llamacpp not in self._best_threads:
            self._best_threads[after_llamacpp] = self.thread_probe(after_llamacpp, self._seconds_per_token)["best"]
        return self._best_threads[after_llamacpp]

    def thread_probe(self, after_llamacpp: bool, seconds_per_token) -> dict:
        """This model's cached thread measurement (`cpu_probe.best_threads`), measured with
        `seconds_per_token` when this machine has none yet."""
        extra = f"{self.spec.dtype}|after-llamacpp={after_llamacpp}"
        return cpu_probe.best_threads("transformers", self.weight_bytes, seconds_per_token, extra)

    def _seconds_per_token(self, n_threads: int) -> float:
        """One decode-sized forward pass (one token, every weight read once) with `n_threads`."""
        status(f"measuring decode speed with {n_threads} thread(s) (once per machine and model size: "
               "a few forward passes, seconds for a small model)")
        ids = torch.tensor([[self.tokenizer.eos_token_id or 0]], dtype=torch.long)

        def run():
            use_torch_threads(n_threads)
            with torch.inference_mode():
                return cpu_probe._timed(lambda: self.model(input_ids=ids, use_cache=False), budget_s=0.5)

        return cpu_probe._in_thread(run)

    def draft_probe(self) -> dict | None:
        """What drafting costs and whether it keeps replies, for this model here (drafts.verification_probe)."""
        if self._draft_probe is None:
            n_threads = self.best_threads()

            def run():
                use_torch_threads(n_threads)
                with torch.inference_mode():
                    return measured_probe("transformers", self.weight_bytes, f"{self.spec.dtype}|threads={n_threads}|few-rows",
                                          lambda: TorchForward(self.model), self.model.config.vocab_size)

            self._draft_probe = cpu_probe._in_thread(run) or {}
        return self._draft_probe or None

    def recommended_generation(self) -> dict:
        """The model's generation_config.json values (e.g. Qwen's repetition_penalty 1.1), then the registry's."""
        config = getattr(self.model, "generation_config", None)
        own = {k: getattr(config, k) for k in TUNABLE if getattr(config, k, None) is not None}
        return {**own, **super().recommended_generation()}

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(self.prompt_ids(messages))

    def prompt_ids(self, messages: Messages) -> list[int]:
        return self.replies.encode(lambda m: list(self.chat_format.encode(m)), self.tokenizer.decode, messages)

    def text_ids(self, text: str) -> list[int]:
        return plain_ids(self.tokenizer, text, split_specials=True)

    def prompt_logits(self, ids: Sequence[int], *, last_only: bool = False, rows: int | None = None,
                      threads: int | None = None) -> Iterator[LogitBlock]:
        """Base.prompt_logits: forward passes of `rows` ids at a time over one KV cache, logits kept only
        for the rows asked for (HF `logits_to_keep`)."""
        from transformers import DynamicCache

        check_logit_ids(ids, self.context_length, self.label)
        width = self.model.get_output_embeddings().out_features
        rows = rows or block_rows(width)
        use_torch_threads(threads or threads_for_stream(self.spec, 1, self.best_threads()))
        cache = DynamicCache()
        with torch.inference_mode():
            for start in range(0, len(ids), rows):
                chunk = torch.tensor([list(ids[start : start + rows])], dtype=torch.long)
                last_chunk = start + rows >= len(ids)
                keep = 1 if last_only else 0  # 0: every row
                out = self.model(input_ids=chunk, past_key_values=cache, use_cache=True, logits_to_keep=keep)
                if not last_only:
                    yield start, out.logits[0].float().numpy().copy()
                elif last_chunk:
                    yield len(ids) - 1, out.logits[0, -1:].float().numpy().copy()

    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event,
               threads: int | None = None) -> Iterator[Chunk]:
        ids = self.prompt_ids(messages)
        input_ids = torch.tensor([ids], dtype=torch.long)
        streamer = CountingStreamer(self.tokenizer)
        kwargs = generation_kwargs(self.chat_format, self.tokenizer, params)
        n_threads = threads or threads_for_stream(self.spec, 1, self.best_threads())
        length = draft_length(self)
        cache, reused = cache_for(self.saved, ids) if self.reuse else (None, 0)
        generated: list[int] = []  # the reply's ids, set by the worker

        def generate(_emit):  # the streamer is the channel back: it feeds its own queue
            use_torch_threads(n_threads)  # per worker; see threads.use_torch_threads
            with torch.inference_mode():
                if length is not None:  # drafts from the conversation: our own loop (drafting.py)
                    kept, sequence = torch_decode(self.model, ids, params, stop, self.chat_format.stop_token_ids,
                                                  streamer, length, cache, reused)
                else:
                    out = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=streamer,
                        stopping_criteria=[StopOnEvent(stop)],
                        past_key_values=cache,  # None: generate() starts a new one
                        **kwargs,
                    )
                    kept, sequence = out.past_key_values, out.sequences[0].tolist()
            generated.extend(sequence[len(ids) :])
            if self.reuse:
                keep_cache(self.saved, kept, sequence)

        first, reply = True, ""
        for text, n, ran_with, drafted in run_in_worker(generate, stop, f"generate-{self.spec.name}",
                                                        out=streamer.text_queue):
            yield Chunk(text=text, tokens=n, first_token_at=streamer.first_token_at,
                        prompt_tokens=len(ids) if first else None, threads=ran_with, drafted=drafted,
                        reused_tokens=reused if first else None)
            first, reply = False, reply + text
        self.replies.remember(self.finish_text(reply), ids, generated, self.chat_format.stop_token_ids)

    def finish_text(self, text: str) -> str:
        return self.chat_format.clean_reply(text)
