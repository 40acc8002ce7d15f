"""The ids a model generated for each reply, put back when the next turn's prompt is formatted.

A reply becomes text in the conversation's history, and formatting the next turn re-encodes that
text. Tokenization is not a round trip: a random-weight model's reply almost never comes back as
the ids it generated, and a trained model's sometimes does not (a space stripped, a merge the model
did not make). The next prompt then leaves what the KV cache holds right after the previous prompt,
and every later turn re-reads the previous reply. Like Ollama's `context` and llama.cpp server's
token cache, each loaded model remembers what it generated after which prompt (`remember`), and
`encode` splices those ids back where the history holds that reply's text: the new prompt then
starts with exactly the ids the cache holds (previous prompt + reply).

Deterministic whatever the KV caches hold: every finished reply is remembered, with reuse on or
off, so a conversation's prompts are the same ids either way and greedy replies stay identical.
A reply is spliced only where the new prompt starts with the prompt it was generated after and
the ids it replaces decode to the reply's text (after whitespace the template puts before it);
anything else (an edited conversation, a reply the memory has dropped) is encoded as text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from llm_compare.backends.llamacpp_eval import common_prefix
from llm_compare.chat_formats import flatten_content

MAX_REPLIES = 64  # replies remembered per loaded model, least recently used out (a few conversations' worth)
PLACEHOLDERS = ("#", "@")  # stand-ins for a reply's text, to find where its ids end in the prompt

Encode = Callable[[list[dict]], list[int]]
Decode = Callable[[Sequence[int]], str]


def common_suffix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many trailing ids `a` and `b` share."""
    return common_prefix(list(reversed(a)), list(reversed(b)))


class ReplyIds:
    """Reply text -> (prompt ids it followed, the ids generated for it), for one loaded model."""

    def __init__(self, limit: int = MAX_REPLIES):
        self.limit = limit
        self._entries: OrderedDict[str, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, text: str, prompt: Sequence[int], generated: Sequence[int], stop_ids=()) -> None:
        """Keep what was generated after `prompt` (a final stop id left out: the template writes its own
        end of turn after the reply) under the reply's text as the history will hold it."""
        generated = list(generated)
        if generated and generated[-1] in stop_ids:
            generated.pop()
        entry = (np.asarray(prompt, dtype=np.int64), np.asarray(generated, dtype=np.int64))
        text = _key(text)
        with self._lock:
            kept = [e for e in self._entries.pop(text, []) if not np.array_equal(e[0], entry[0])]
            self._entries[text] = [entry, *kept][:4]  # the same text after other prompts: a few kept
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)

    def _lookup(self, text: str, ids: Sequence[int]) -> tuple[int, list[int]] | None:
        """(length of the prompt the reply followed, its ids) for a remembered `text` whose prompt
        `ids` starts with; None when none does."""
        with self._lock:
            entries = self._entries.get(_key(text))
            if entries is None:
                return None
            self._entries.move_to_end(_key(text))
            for prompt, generated in entries:
                if len(prompt) <= len(ids) and common_prefix(prompt, ids[: len(prompt)]) == len(prompt):
                    return len(prompt), generated.tolist()
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def encode(self, encode: Encode, decode: Decode, messages: list[dict]) -> list[int]:
        """`encode(messages)`, with each remembered assistant reply's re-encoded ids replaced by the
        ids generated for it (oldest first: a later reply's prompt holds the earlier ones' ids)."""
        ids = encode(messages)
        if not len(self):
            return ids
        out = list(ids)
        for k, m in enumerate(messages):
            text = flatten_content(m.get("content"))
            found = self._lookup(text, out) if m.get("role") == "assistant" else None
            if found is None:
                continue
            start, generated = found
            end = len(out) - self._tail(encode, messages, k, ids)
            if end >= start and _is_reply(decode(out[start:end]), text):
                out = out[:start] + generated + out[end:]
        return out

    @staticmethod
    def _tail(encode: Encode, messages: list[dict], k: int, ids: list[int]) -> int:
        """Ids after message k's reply text in `ids`: the common tail with the prompt where that text is
        replaced by a placeholder (one that differs from the text's last character)."""
        text = flatten_content(messages[k].get("content"))
        mark = next(p for p in PLACEHOLDERS if not text.endswith(p))
        marked = [*messages[:k], {**messages[k], "content": mark}, *messages[k + 1 :]]
        return common_suffix(ids, encode(marked))


def _key(text: str) -> str:
    """A reply's text as the history may hold it: the engine drops a character cut in half by a
    length limit or a stop (engine._stream_counted)."""
    return text.removesuffix("\ufffd")


def _is_reply(decoded: str, text: str) -> bool:
    """Whether ids decoding to `decoded` are the reply `text`, after whitespace the template puts
    before it (ChatGLM3's empty metadata line): nothing of the template's own text is replaced."""
    return decoded.endswith(text) and not decoded[: len(decoded) - len(text)].strip()
