"""llama.cpp backend: a GGUF file served by `llama_cpp.Llama`, token by token in a worker thread.

Why token by token (`Llama.generate`) rather than `create_chat_completion`: every chunk then
covers exactly one new token (the metrics count tokens, not text pieces), the stop event is
checked between tokens, and the prompt is built with the GGUF's own chat template the same way
transformers builds it (the token ids are identical for the embedded model; a test checks that).

A `Llama` object holds one KV cache and is not safe to use from two threads at once, so the
backend keeps a small set of instances of the same file: a second stream running at the same
time (both panes on one model) gets its own instance, loaded on first need (the weights are
memory-mapped, so the second costs little memory and ≈0.3 s).

Each instance keeps the KV cache of its last request: the next one evaluates only the ids after
their common prefix, and another conversation's cache is saved and restored around it
(backends/kv_states.py, docs/conversations.md).
"""

from __future__ import annotations

import dataclasses
import queue
import random
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import psutil

from llm_compare import cpu_probe
from llm_compare.architecture.tokens import plain_ids
from llm_compare.backends import detokenize
from llm_compare.backends.base import (Backend, Chunk, LogitBlock, Messages, block_rows, check_logit_ids,
                                       run_in_worker)
from llm_compare.backends.drafting import LlamaForward, draft_length, llama_decode, measured_probe
from llm_compare.backends.gguf_text import GgufPrompt, gguf_path
from llm_compare.backends.kv_states import SavedCaches, prepare_llama
from llm_compare.backends.llamacpp_amx import llama_kwargs
from llm_compare.backends.llamacpp_eval import common_prefix, evaluate_blocks, held_ids
from llm_compare.backends.llamacpp_exported import generate_ids
from llm_compare.backends.reply_ids import ReplyIds
from llm_compare.errors import UserError
from llm_compare.loading.gguf.header import trained_context
from llm_compare.loading.memory import APP_BYTES, available_bytes, count_gguf, saved_caches_budget
from llm_compare.loading.size_model import GGML_IDS, kv_cache_bytes
from llm_compare.machine import anon_rss, rss
from llm_compare.params import GenerationParams
from llm_compare.progress import status
from llm_compare.specs import reserved_context
from llm_compare.threads import LLAMACPP_RAN, threads_for_stream

MAX_INSTANCES = 2  # one per pane; a third concurrent stream waits for a free one


def llama_cpp_version() -> str:
    import llama_cpp

    return getattr(llama_cpp, "__version__", "?")


def llama_cpp_threads(llm, n_threads: int) -> None:
    """Threads for this stream (the policy may change them between replies)."""
    import llama_cpp

    llama_cpp.llama_set_n_threads(llm._ctx.ctx, n_threads, n_threads)


class LlamaCppBackend(Backend):
    """A GGUF file through llama.cpp. `text` (a `llamacpp_exported.TextSide`) marks a model exported
    from a directory: prompts, stops and decoding then go through the project's own tokenizer."""

    def __init__(self, spec, path: Path | None = None, text=None, open_kwargs: dict | None = None):
        self.spec = spec
        # the thread probe sees llama.cpp, also for a model exported from a directory (its spec
        # names the transformers backend)
        self.thread_spec = dataclasses.replace(spec, backend="llamacpp")
        self.path = path or gguf_path(spec.source)
        self.text = text
        self.open_kwargs = open_kwargs or {}
        self.weight_bytes = self.path.stat().st_size  # the thread probe's model-size input
        trained = trained_context(self.path)
        self.n_ctx = reserved_context(spec.context, trained)
        self._best_threads: int | None = None
        before, before_anon, t0 = rss(), anon_rss(), time.perf_counter()
        first = self._open()
        self.load_seconds = time.perf_counter() - t0
        self.resident_bytes = max(0, rss() - before)
        # what one more instance would add: llama.cpp's repacked weights, KV cache and buffers are per
        # instance (the mapped file is shared); ≈ 4 GiB for Qwen-7B in gguf-q4_k_m
        self.instance_bytes = max(0, anon_rss() - before_anon)
        trained = trained or first.n_ctx()
        if text is None:
            self.prompt = GgufPrompt(first, spec.chat_format, self.path)
        else:
            self.prompt = text.chat_format
            self.drops_last_token = getattr(text.chat_format, "drops_last_token", False)
            trained = min(trained, text.context_length or trained)
        self.context_length = min(first.n_ctx(), trained)
        if self.context_length < trained:
            self.context_fix = (f", or give {spec.name!r} a larger `context` in the model registry (it takes up "
                                f"to {trained} tokens; llama.cpp reserves the memory for them at load)")
        self.drafts = True  # prompt lookup (drafts.py) where it pays and keeps replies (LLM_COMPARE_DRAFTS)
        self._draft_probe: dict | None = None
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._idle.put(first)
        self._count = 1
        self._count_lock = threading.Lock()
        self.reuse = True  # False: every prompt is evaluated in full (bench/conversation.py's baseline)
        self.saved = SavedCaches(saved_caches_budget(self.context_kv_bytes(), available_bytes()))
        self.replies = ReplyIds()  # each reply's generated ids, spliced into the next prompt (reply_ids.py)

    def context_kv_bytes(self) -> int:
        """KV cache of one full context of this model in its cache type (a saved conversation's ceiling)."""
        kind = GGML_IDS[self.open_kwargs.get("type_k", 1)].name  # llama.cpp's default: f16 (id 1)
        return kv_cache_bytes(count_gguf(self.path).kv_per_token, self.n_ctx, kind)

    def _open(self):
        import llama_cpp

        threads = threads_for_stream(self.thread_spec, 1, self._best_threads)
        LLAMACPP_RAN.set()  # a llama.cpp context runs OpenMP work from creation on (threads.py)
        try:
            options = {
                "n_ctx": self.n_ctx,  # KV cache size; prompts + replies beyond it are refused
                "n_threads": threads, "n_threads_batch": threads, "verbose": False,
                **llama_kwargs(self.path),  # AMX handling for this machine (llamacpp_amx.py)
            }
            llm = llama_cpp.Llama(model_path=str(self.path), **options | self.open_kwargs)
        except (ValueError, RuntimeError, OSError) as e:
            raise UserError(
                f"llama.cpp cannot load {self.path} ({e}); check it is a complete GGUF file of an "
                "architecture this llama-cpp-python version supports"
            ) from None
        llm.last_n_tokens_size = llm.n_ctx()  # repetition penalty over the whole reply, as in transformers
        return llm

    def recommended_generation(self) -> dict:
        own = self.text.generation if self.text is not None else {}
        return {**own, **super().recommended_generation()}

    def finish_text(self, text: str) -> str:
        return self.text.chat_format.clean_reply(text) if self.text is not None else super().finish_text(text)

    def _acquire(self, stop: threading.Event, ids: list[int]):
        """The idle instance whose cache holds most of `ids`, a new one (up to MAX_INSTANCES, and only
        while RAM has room for its own copy), or wait; None if stopped while waiting."""
        try:
            return self._best_idle(ids)
        except queue.Empty:
            pass
        with self._count_lock:
            if self._count < MAX_INSTANCES and self.room_for_another():
                self._count += 1
                try:
                    return self._open()
                except BaseException:
                    self._count -= 1
                    raise
        if self._count < MAX_INSTANCES:
            status(f"waiting for {self.label}'s other stream to end: no free RAM for a second copy "
                   f"(≈{self.instance_bytes / 2**30:.1f} GiB)")
        while not stop.is_set():
            try:
                return self._idle.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _best_idle(self, ids: list[int]):
        idle = [self._idle.get_nowait()]
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        idle.sort(key=lambda llm: common_prefix(held_ids(llm), ids))
        best = idle.pop()
        for llm in idle:
            self._idle.put(llm)
        return best

    def room_for_another(self) -> bool:
        """Whether free RAM holds one more instance and still leaves the app its margin."""
        return psutil.virtual_memory().available >= self.instance_bytes + APP_BYTES

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(self.prompt_ids(messages))

    def prompt_ids(self, messages: Messages) -> list[int]:
        if self.text is not None:
            decode = self.text.tokenizer.decode
        else:
            decode = self.prompt.decode
        return self.replies.encode(lambda m: list(self.prompt.encode(m)), decode, messages)

    def text_ids(self, text: str) -> list[int]:
        """Through the directory's tokenizer for an exported model, else the GGUF's own (llama.cpp)."""
        if self.text is not None:
            return plain_ids(self.text.tokenizer, text, split_specials=True)
        return self.prompt.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def prompt_logits(self, ids: Sequence[int], *, last_only: bool = False, rows: int | None = None,
                      threads: int | None = None) -> Iterator[LogitBlock]:
        """Base.prompt_logits on an idle instance (held until the generator ends), through the shared
        evaluation primitive (llamacpp_eval.evaluate_blocks): batches of `rows` ids. Every row: from an
        empty cache; `last_only`: the instance's cached common prefix is kept (a judge's prompts share theirs)."""
        check_logit_ids(ids, self.context_length, self.label)
        threads = threads or threads_for_stream(self.thread_spec, 1, self.best_threads())  # measures on an idle instance
        ids = [int(t) for t in ids]
        llm = self._acquire(threading.Event(), ids)
        try:
            llama_cpp_threads(llm, threads)
            # only the last row is kept with last_only: whole n_batch batches, as a plain evaluation runs them
            rows = rows or (None if last_only else block_rows(llm.n_vocab()))
            for start, block in evaluate_blocks(llm, ids, all_rows=not last_only, reuse=last_only, batch=rows):
                yield start, block.reshape(-1, llm.n_vocab())
        finally:
            self._idle.put(llm)

    def best_threads(self) -> int:
        """Measured once per machine and model size: llama.cpp's thread synchronisation costs more than
        a small model's matmuls on some CPUs and less on others (threads.py)."""
        if self._best_threads is None:
            self._best_threads = cpu_probe.best_threads("llamacpp", self.weight_bytes, self._seconds_per_token,
                                                        extra=f"llama_cpp {llama_cpp_version()}")["best"]
        return self._best_threads

    def draft_probe(self) -> dict | None:
        """What drafting costs and whether it keeps replies, for this file here (drafts.verification_probe;
        measured once, on an idle instance)."""
        if self._draft_probe is None:
            n_threads = self.best_threads()
            llm = self._idle.get()
            try:
                llama_cpp_threads(llm, n_threads)
                kind = self.spec.dtype if self.text is not None else f"file type {llm.metadata.get('general.file_type')}"
                self._draft_probe = measured_probe(
                    "llamacpp", self.weight_bytes, f"llama_cpp {llama_cpp_version()}|{kind}|threads={n_threads}",
                    lambda: LlamaForward(llm), llm.n_vocab()) or {}
            finally:
                LlamaForward(llm).keep(0)
                self._idle.put(llm)
        return self._draft_probe or None

    def _seconds_per_token(self, n_threads: int) -> float:
        """Decode steps (one token each, after a short prompt) with `n_threads`, on an idle instance."""
        import llama_cpp

        status(f"measuring llama.cpp decode speed with {n_threads} thread(s) (once per machine and model size)")
        llm = self._idle.get()
        try:
            llama_cpp.llama_set_n_threads(llm._ctx.ctx, n_threads, n_threads)
            bos = llm.token_bos() if llm.token_bos() != -1 else 0
            llm.reset()
            llm.eval([bos])

            def step():
                if llm.n_tokens >= llm.n_ctx() - 1:
                    llm.reset()
                llm.eval([bos])

            return cpu_probe._timed(step, budget_s=0.5)
        finally:
            llm.reset()
            self._idle.put(llm)

    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event,
               threads: int | None = None) -> Iterator[Chunk]:
        ids = self.prompt_ids(messages)
        n_threads = threads or threads_for_stream(self.thread_spec, 1, self.best_threads())
        length = draft_length(self)

        reused: list[int] = [0]  # set by the worker before its first chunk
        generated: list[int] = []  # the reply's ids, filled by the worker

        def generate(emit):
            import llama_cpp

            llm = self._acquire(stop, ids)
            if llm is None:
                return

            def emit_counted(item):  # with the threads this instance's context runs with now
                emit((*item, llama_cpp.llama_n_threads(llm._ctx.ctx)))

            try:
                reused[0] = prepare_llama(llm, ids, self.saved, self.reuse)
                if self.text is not None:
                    llama_cpp_threads(llm, n_threads)
                    generate_ids(llm, ids, params, stop, self.text, emit_counted, length, generated)
                else:
                    self._generate(llm, ids, params, stop, n_threads, emit_counted, length, generated)
            finally:
                self._idle.put(llm)

        first, reply = True, ""
        for text, tokens, first_at, drafted, ran_with in run_in_worker(generate, stop, f"llamacpp-{self.spec.name}"):
            yield Chunk(text=text, tokens=tokens, first_token_at=first_at, prompt_tokens=len(ids) if first else None,
                        threads=ran_with, drafted=drafted, reused_tokens=reused[0] if first else None)
            first, reply = False, reply + text
        stops = self.text.chat_format.stop_token_ids if self.text is not None else ()
        self.replies.remember(self.finish_text(reply), ids, generated, stops)

    def _generate(self, llm, ids, params: GenerationParams, stop, n_threads: int, emit, length=None,
                  generated: list[int] | None = None) -> None:
        import llama_cpp

        llama_cpp_threads(llm, n_threads)
        llm.set_seed(params.seed if params.seed is not None else random.SystemRandom().randrange(2**31))
        if params.greedy:
            sampling = dict(temp=0.0, top_k=1, top_p=1.0)
        else:
            sampling = dict(temp=params.temperature, top_k=0, top_p=params.top_p)
        pieces = detokenize.for_llama(llm)
        first_at = None
        if stop.is_set():
            return

        def put(token: int, drafted: bool = False) -> None:
            nonlocal first_at
            first_at = first_at or time.perf_counter()
            if generated is not None:
                generated.append(token)
            emit((pieces.feed(token), 1, first_at, int(drafted)))

        if length is not None:  # drafts from the conversation, verified by llama.cpp's own sampler chain
            llama_decode(llm, ids, sampling, params, stop, put, length)
        else:
            # the cache holds the reusable prefix of `ids` (kv_states.prepare_llama): generate's own
            # prefix match keeps it and evaluates the rest
            n = 0
            for token in llm.generate(
                ids, min_p=0.0, typical_p=1.0, repeat_penalty=params.repetition_penalty, **sampling
            ):
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    break
                put(token)
                n += 1
                if n >= params.max_new_tokens or stop.is_set():
                    break
        tail = pieces.flush()
        if tail:
            emit((tail, 0, first_at, 0))  # bytes of a token already counted

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
