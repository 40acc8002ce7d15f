"""Token ids -> text pieces as they are generated, for every local backend (transformers, plain
llama.cpp, exported GGUF).

Decoding each new id alone is wrong in two ways: a multi-byte UTF-8 character split over several
tokens (byte-fallback tokens such as `<0xE4>`, or byte-level BPE pieces) decodes to U+FFFD, and
sentencepiece drops the leading space of the first piece of a decode. Decoding the whole reply
again at every token is right but quadratic. `Detokenizer` decodes a short window instead: the ids
since the last emitted piece plus the piece before them as context, and emits the text the new
ids add, holding them back while that text ends in an incomplete character.
"""

from __future__ import annotations

from typing import Callable, Iterable

INCOMPLETE = "\ufffd"  # what a decoder writes for bytes that do not (yet) form a character


class Detokenizer:
    """Feed ids, get the text they add; `flush()` at the end returns what is still held back.

    The concatenated pieces equal one `decode(all_ids)` wherever the decoder's output for the
    window is a prefix-stable function of its ids (true of byte concatenation and of the
    tokenizers the project loads; the tests compare the two on Chinese and emoji).
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.context = 0  # start of the window: the last emitted piece's ids, decoded again as context
        self.shown = 0  # ids before this index are emitted

    def feed(self, ids: int | Iterable[int]) -> str:
        self.ids.extend([ids] if isinstance(ids, int) else ids)
        before, text = self._window()
        if len(text) <= len(before) or text.endswith(INCOMPLETE):  # nothing yet, or half a character
            return ""
        self.context, self.shown = self.shown, len(self.ids)
        return text[len(before):]

    def flush(self) -> str:
        """The held-back rest (an incomplete character at the very end becomes U+FFFD)."""
        before, text = self._window()
        self.context = self.shown = len(self.ids)
        return text[len(before):]

    def _window(self) -> tuple[str, str]:
        return self.decode(self.ids[self.context:self.shown]), self.decode(self.ids[self.context:])


def for_tokenizer(tokenizer) -> Detokenizer:
    """Through a transformers tokenizer (or the project's own legacy ones), special tokens skipped."""
    return Detokenizer(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))


def for_llama(llm) -> Detokenizer:
    """Through a llama.cpp model's vocabulary: each token's bytes, concatenated, then UTF-8."""
    return Detokenizer(lambda ids: llm.detokenize(ids, special=False).decode("utf-8", errors="replace"))
