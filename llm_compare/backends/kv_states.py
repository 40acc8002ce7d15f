"""Saved KV caches of conversations waiting for their next turn, kept within a memory budget.

Several conversations share one loaded model (`--concurrency`, a class arena, a report beside a
chat). A conversation is known by the token ids its cache holds, not by a session id: a request
takes the saved cache sharing the longest prefix with its prompt, so the next turn, Regenerate,
an edit, a report prompt sharing a system prompt all find their cache with no bookkeeping in the
engine, and a cache can never be stale (a stored cache is only used for the ids it really holds).
Least recently used caches are dropped first to stay within `budget` bytes
(loading.memory.saved_caches_budget chooses it from free RAM and the model's KV size), and to
leave the app its margin of free RAM whatever the budget says.

The states are the backend's own (a llama.cpp `SavedSequence`, a transformers `DynamicCache`); this
module only keys, sizes and evicts them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

from llm_compare.backends.llamacpp_eval import (common_prefix, held_ids, keep_prefix, restore_sequence,
                                                reusable_prefix, saved_sequence)
from llm_compare.loading.memory import APP_BYTES


@dataclass
class SavedCache:
    ids: list[int]  # what the cache holds, position by position
    state: object
    nbytes: int


TAIL = 16  # ids at a cache's end a next turn may re-encode differently (a stripped reply, its end token)


def is_another(held: int, kept: int, wanted: int) -> bool:
    """Whether a request for `wanted` ids that keeps `kept` of a cache's `held` ids comes from another
    conversation (a shared system prompt, the template's first tokens) or an earlier point of this
    one, rather than this conversation's next turn (drops at most a few ids at the end) or
    Regenerate (wants nothing beyond what it keeps): the cache then stays saved for its own."""
    return kept < wanted and held - kept > max(TAIL, held // 8)


class SavedCaches:
    def __init__(self, budget: int):
        self.budget = budget
        self._entries: list[SavedCache] = []  # least recently used first
        self._lock = threading.Lock()

    def take(self, ids, at_least: int = 1) -> tuple[SavedCache | None, int]:
        """The cache sharing the longest prefix with `ids` (at least `at_least` ids; ties: the most
        recently used) and that prefix's length; (None, 0) when none does. It leaves the store,
        unless the request is another conversation's (`is_another`): then the caller must copy it."""
        with self._lock:
            best, best_n = None, max(at_least, 1) - 1
            for entry in self._entries:
                n = common_prefix(entry.ids, ids)
                if n > best_n or (n == best_n and best is not None):
                    best, best_n = entry, n
            if best is None:
                return None, 0
            self._entries.remove(best)
            if is_another(len(best.ids), best_n, len(ids)):
                self._entries.append(best)  # used now: the most recently used
            return best, best_n

    def longest_prefix(self, ids) -> int:
        """The longest prefix of `ids` a saved cache holds (nothing removed)."""
        with self._lock:
            return max((common_prefix(e.ids, ids) for e in self._entries), default=0)

    def put(self, ids, state, nbytes: int) -> bool:
        """Keep a cache as the most recently used, dropping the least recently used ones to stay within
        the budget; False (nothing kept) when it alone exceeds the budget or holds nothing."""
        ids = list(ids)
        if not ids or nbytes > self.budget:
            return False
        with self._lock:
            room = self.budget - nbytes
            short = APP_BYTES + nbytes - psutil.virtual_memory().available  # RAM other work needs now
            while self._entries and (sum(e.nbytes for e in self._entries) > room or short > 0):
                short -= self._entries.pop(0).nbytes
            if short > 0:
                return False
            self._entries.append(SavedCache(ids, state, nbytes))
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def used(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries)

    def held(self) -> list[int]:
        """Tokens of each saved cache, least recently used first."""
        with self._lock:
            return [len(e.ids) for e in self._entries]

    def describe(self) -> str:
        """One line for `doctor` and the logs: what is kept, against the budget."""
        held = self.held()
        return (f"{len(held)} saved conversation cache(s), {sum(held)} tokens, "
                f"{self.used / 2**20:.0f} MiB of a {self.budget / 2**20:.0f} MiB budget")


def prepare_llama(llm, ids, saved: SavedCaches, reuse: bool = True) -> int:
    """Ready a llama.cpp context for a request for `ids`; returns how many cached ids it keeps.

    The context keeps its common prefix with `ids`, unless a saved cache holds more of them: then
    the context's own cache is saved first (another conversation's, to be restored at its next
    turn) and the better one restored. A context that would lose most of what it holds to this
    request is saved too (another conversation arriving with no saved cache of its own).
    `reuse=False`: the cache is emptied and every id is evaluated afresh.
    """
    if not reuse:
        return keep_prefix(llm, 0)
    live = reusable_prefix(llm, ids)
    if saved.longest_prefix(ids) > live:
        _save_llama(llm, saved, saved_sequence)
        entry, _ = saved.take(ids, at_least=live + 1)  # restoring copies it: a shared one may stay saved
        if entry is not None and not restore_sequence(llm, entry.state):
            keep_prefix(llm, 0)
    elif is_another(llm.n_tokens, common_prefix(held_ids(llm), ids), len(ids)):
        _save_llama(llm, saved, saved_sequence)
    return keep_prefix(llm, reusable_prefix(llm, ids))


def _save_llama(llm, saved: SavedCaches, saved_sequence) -> None:
    if llm.n_tokens:
        state = saved_sequence(llm)
        saved.put(state.ids, state, state.nbytes)
