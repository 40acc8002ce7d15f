"""The one interface every pane is served through.

A backend turns (messages, params, stop_event) into an iterator of `Chunk`s: decoded text plus
how many new tokens it covers. It owns its worker thread (if any) and guarantees the worker has
ended when the iterator is exhausted or closed. Timing and metrics live in `engine`, not here,
so every backend is measured the same way.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from llm_compare.errors import UserError
from llm_compare.params import TUNABLE, GenerationParams
from llm_compare.specs import ModelSpec
from llm_compare.threads import runs_here

Messages = list[dict]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]
LogitBlock = tuple[int, np.ndarray]  # (first position, float32 logits [rows, vocab]) from `prompt_logits`
LOGIT_BLOCK_VALUES = 2**23  # logits per block (32 MiB of float32): bounds memory on long texts


def block_rows(vocab: int) -> int:
    """Rows per logits block for a vocabulary this wide (≈170 for SmolLM2's 49152, ≈55 for Qwen's 151936)."""
    return max(1, LOGIT_BLOCK_VALUES // max(1, vocab))


def check_logit_ids(ids: Sequence[int], context_length: int | None, label: str) -> None:
    """Refuse what `prompt_logits` cannot read: no ids, or more than the model's context."""
    if not len(ids):
        raise UserError(f"no tokens to score for {label}; pass a non-empty text")
    if context_length and len(ids) > context_length:
        raise UserError(f"{len(ids)} tokens are more than {label}'s context of {context_length}; "
                        "cut the text to the context first (fidelity does)")


@dataclass
class Chunk:
    text: str
    tokens: int  # new tokens this chunk accounts for (0 allowed: text flushed late)
    first_token_at: float | None = None  # time.perf_counter() of the first new token, when known
    prompt_tokens: int | None = None  # known only to some backends, reported once
    threads: int | None = None  # CPU threads its generating thread runs with, read there (None: not local)
    drafted: int = 0  # of `tokens`, how many came from drafts the model verified (drafts.py)
    reused_tokens: int | None = None  # prompt tokens kept from the model's KV cache (not re-read), reported once


class Backend(ABC):
    """A loaded model that can stream replies. Subclasses set the attributes below in __init__."""

    spec: ModelSpec
    context_length: int | None = None
    context_fix: str = ""  # how a user gets a longer context, for the too-long message ("" when fixed)
    load_seconds: float = 0.0  # how long loading this backend took (`ask --json`: "load_s")
    resident_bytes: int = 0  # memory the loaded weights added to the process (RSS delta)
    weight_bytes: int | None = None  # every byte of the weights (parameters and buffers): sizes, ceilings
    dtype_choice: str = ""  # what dtype "auto" chose for it and why (dtype_choice.Choice.line; "" when set)
    drops_last_token: bool = False  # the model's original chat() keeps max_new_tokens - 1 tokens

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def runs_here(self) -> bool:
        return runs_here(self.spec)

    @abstractmethod
    def count_prompt_tokens(self, messages: Messages) -> int | None:
        """Tokens of the formatted prompt, or None where unknown (remote); used for the context check."""

    @abstractmethod
    def stream(self, messages: Messages, params: GenerationParams, stop: threading.Event,
               threads: int | None = None) -> Iterator[Chunk]:
        """Yield chunks until the reply ends, `stop` is set, or max_new_tokens is reached.

        `threads`: CPU threads for this stream (the engine derives it from the streams running now;
        None: a lone stream's count). Raises UserError for input the model cannot take. Must leave no running worker behind,
        also when the caller closes the iterator early.
        """

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The formatted prompt's ids exactly as `stream` would feed them (chat format, generation prompt)."""
        raise UserError(f"{self.label} runs remotely: its token ids are not available here; "
                        "pick a local model (transformers or llama.cpp)")

    def text_ids(self, text: str) -> list[int]:
        """Ids of `text` alone through this model's tokenizer: no BOS, no chat format, specials as plain text."""
        raise UserError(f"{self.label} runs remotely: its tokenizer is not available here; "
                        "pick a local model (transformers or llama.cpp)")

    def prompt_logits(self, ids: Sequence[int], *, last_only: bool = False, rows: int | None = None,
                      threads: int | None = None) -> Iterator[LogitBlock]:
        """Teacher-forced next-token logits of `ids`, in blocks, so memory stays bounded on long texts.

        Yields `(start, logits)` in order: `logits` is a fresh float32 array [n, vocab] (the caller
        may keep it) whose row i is what the model predicts after reading ids[: start + i + 1], i.e.
        its scores for ids[start + i + 1]. The blocks cover positions 0 .. len(ids) - 1 without gap,
        in order, each at most `rows` rows (default `block_rows(vocab)`; llama.cpp also caps a block at
        its batch size), so memory stays bounded whatever the length. `last_only`: one block `(len(ids) - 1, [1, vocab])`, without
        computing the other rows' logits (the cheap "next token after this prompt" case).
        `vocab` is the model's logits width (embedding rows; may exceed the tokenizer's size).
        Runs in the caller's thread with `threads` CPU threads (None: this model's lone-stream
        count); nothing of the evaluation is kept after the generator ends or is closed. Raises
        UserError for no ids or more than `context_length` (cut first); remote backends raise
        UserError (no logits over the API).
        """
        raise UserError(f"{self.label} runs remotely: its API returns no logits for every position; "
                        "pick a local model (transformers or llama.cpp)")
        yield  # pragma: no cover - makes this a generator like the real ones

    def best_threads(self) -> int | None:
        """Threads a lone stream of this model runs fastest with here (measured once; None: not local)."""
        return None

    def draft_probe(self) -> dict | None:
        """What drafting costs here and whether it keeps replies (drafts.verification_probe); None: no drafts."""
        return None

    def recommended_generation(self) -> dict:
        """Sampling settings this model is meant to run with (registry `generation` entry)."""
        return {k: v for k, v in self.spec.generation.items() if k in TUNABLE}

    def finish_text(self, text: str) -> str:
        """The finished reply as the model's own chat() would return it (metadata removed, stripped)."""
        return text.strip()

    def close(self) -> None:
        """Free resources (weights, sockets); the backend is unusable afterwards."""


_END = object()


def run_in_worker(produce: Callable[[Callable], None], stop: threading.Event, name: str,
                  out: queue.Queue | None = None) -> Iterator:
    """Run `produce(emit)` in a worker thread and yield what it emits, in order.

    The one place a backend hands generation to a thread. An exception in the worker is re-raised
    here after the items it emitted; closing the iterator early sets `stop` and waits for the worker,
    so no generation outlives its consumer. `out`: a queue the worker already feeds (a streamer's).
    """
    out = out if out is not None else queue.Queue()
    failure: list[BaseException] = []

    def work():
        try:
            produce(out.put)
        except BaseException as e:  # reported to the consumer, never lost in the thread
            failure.append(e)
        finally:
            out.put(_END)

    worker = threading.Thread(target=work, daemon=True, name=name)
    worker.start()
    completed = False
    try:
        while (item := out.get()) is not _END:
            yield item
        completed = True
    finally:
        if not completed:  # the consumer closed us early: that is a stop
            stop.set()
        worker.join()
    if failure:
        raise failure[0]
