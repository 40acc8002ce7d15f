"""The one way the project evaluates token ids on a llama.cpp context, reusing its KV cache.

A `llama_cpp.Llama` already records which ids its KV cache holds (sequence 0): `llm.input_ids[:
llm.n_tokens]`. `evaluate` keeps that record exact: it trims the cache to the longest common
prefix with the new ids (llama.cpp `llama_memory_seq_rm`), evaluates only the rest in batches of
`llm.n_batch`, and returns logits for the last row, or for every evaluated row. Every llama.cpp
path goes through it (replies, prompt-lookup draft verification, fidelity's all-position logits),
so "what the cache holds" means the same everywhere, and `Llama.generate`'s own prefix match reads
the same record.

At least one id is always evaluated (a request whose ids are all cached re-evaluates the last one),
so the returned logits are always those of this evaluation, never stale ones. Logits of a prefix
evaluated in one batch and of the same ids evaluated a few at a time agree to float rounding
(llama.cpp's kernels accumulate in a batch-size-dependent order), not always to the bit.

`saved_sequence` / `restore_sequence` copy the cache of sequence 0 out of and back into a context
(`llama_state_seq_*`, KV only: no logits, no weights), so several conversations can take turns on
one instance.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

SEQ = 0  # the one sequence every project context uses


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(diff[0]) if diff.size else n


def held_ids(llm) -> list[int]:
    """The ids the context's KV cache holds, in order (position i holds id i)."""
    return llm.input_ids[: llm.n_tokens].tolist()


def keep_prefix(llm, n: int) -> int:
    """Keep the first `n` cached tokens and drop the rest; returns how many are kept (0 when this
    model's memory cannot drop a tail, e.g. a recurrent one: then the whole cache is cleared)."""
    n = max(0, min(n, llm.n_tokens))
    if n == 0 or not llm._ctx.kv_cache_seq_rm(SEQ, n, -1):
        llm._ctx.kv_cache_seq_rm(SEQ, 0, -1)
        n = 0
    llm.n_tokens = n
    return n


def reusable_prefix(llm, ids: Sequence[int]) -> int:
    """Cached tokens a request for `ids` can keep: the common prefix, leaving at least one id to evaluate."""
    return min(common_prefix(held_ids(llm), ids), max(0, len(ids) - 1))


def start_from(llm, ids: Sequence[int], reuse: bool = True) -> int:
    """Trim the cache for a request for `ids`; returns the first position left to evaluate."""
    if not ids:
        raise ValueError("nothing to evaluate: no ids")
    if len(ids) > llm.n_ctx():
        raise ValueError(f"{len(ids)} ids do not fit the context of {llm.n_ctx()} tokens")
    return keep_prefix(llm, reusable_prefix(llm, ids) if reuse else 0)


def evaluate_blocks(llm, ids: Sequence[int], *, all_rows: bool = False, reuse: bool = True,
                    batch: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Make the cache hold exactly `ids`, evaluating what it lacks; yield (position, logits) per batch.

    `logits` has one row per evaluated id of the batch when `all_rows` (position = the first's index
    in `ids`), else only the very last id's row, once, after the last batch. Memory stays bounded by
    one batch of rows: a caller needing every position of a long text consumes the blocks as they
    come. `reuse=False` evaluates every id afresh (nothing kept); `batch` caps ids per decode call.
    """
    return _decode_from(llm, ids, start_from(llm, ids, reuse), all_rows, batch)


def _decode_from(llm, ids, start: int, all_rows: bool, batch: int | None) -> Iterator[tuple[int, np.ndarray]]:
    step = min(batch or llm.n_batch, llm.n_batch)
    n_vocab = llm.n_vocab()
    for lo in range(start, len(ids), step):
        chunk = [int(t) for t in ids[lo : lo + step]]
        llm._batch.set_batch(batch=chunk, n_past=lo, logits_all=all_rows)
        llm.n_tokens = lo  # a failed decode leaves the record at what the cache surely holds
        llm._ctx.decode(llm._batch)
        llm.input_ids[lo : lo + len(chunk)] = chunk
        llm.n_tokens = lo + len(chunk)
        if all_rows:
            rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), n_vocab))
            yield lo, rows.copy()
    if hasattr(llm, "_requires_eval"):  # Llama.generate: the context's logits are fresh
        llm._requires_eval = False
    if not all_rows:
        last = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        yield len(ids) - 1, last.copy()


@dataclass
class Evaluation:
    reused: int  # ids kept from the cache: the first evaluated position
    logits: np.ndarray  # [n_vocab] for the last id, or [len(ids) - reused, n_vocab] with all_rows


def evaluate(llm, ids: Sequence[int], *, all_rows: bool = False, reuse: bool = True) -> Evaluation:
    """`evaluate_blocks` gathered: the last id's logits, or every evaluated row's (all_rows)."""
    start = start_from(llm, ids, reuse)
    blocks = [rows for _, rows in _decode_from(llm, ids, start, all_rows, None)]
    return Evaluation(start, np.concatenate(blocks) if all_rows else blocks[0])


@dataclass
class SavedSequence:
    """A copy of a context's KV cache (sequence 0) and the ids it holds."""

    ids: list[int]
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data)


def saved_sequence(llm) -> SavedSequence:
    """Copy the cache out of the context (the context keeps its own)."""
    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, SEQ)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buffer, size, SEQ)
    return SavedSequence(held_ids(llm), bytes(buffer)[:written])


def restore_sequence(llm, saved: SavedSequence) -> bool:
    """Replace the context's cache with `saved`; False (and an empty cache) when llama.cpp refuses it."""
    import llama_cpp

    keep_prefix(llm, 0)
    buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
    if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(saved.data), SEQ) != len(saved.data):
        llm._ctx.kv_cache_seq_rm(SEQ, 0, -1)
        return False
    llm.input_ids[: len(saved.ids)] = saved.ids
    llm.n_tokens = len(saved.ids)
    if hasattr(llm, "_requires_eval"):
        llm._requires_eval = True  # the context's logits are not the restored sequence's
    return True
