"""Qwen-1 (Qwen-7B-Chat) tokenizer and ChatML prompt, rebuilt from `qwen.tiktoken` without remote code.

`qwen.tiktoken` holds `base64(token bytes) rank` lines: a byte-level BPE rank table. tiktoken
builds the same encoder the original uses from those ranks, Qwen's split pattern (cl100k-like, but
digits one at a time) and the fixed special ids. Checked id for id against
fixtures/legacy/qwen-7b-chat-tiny/reference.json.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from pathlib import Path

from llm_compare.chat_formats import Messages, flatten_content
from llm_compare.errors import UserError
from llm_compare.loading.tokenizer_base import LegacyTokenizer, id_list

SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
N_RANKS = 151643  # the ranks in the original qwen.tiktoken; special ids start right after
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))
DEFAULT_SYSTEM = "You are a helpful assistant."
MAX_WINDOW_SIZE = 6144  # Qwen-7B-Chat's generation_config.json: history beyond it is dropped


def read_ranks(path: Path) -> dict[bytes, int]:
    """The BPE ranks of a `qwen.tiktoken` file; refuses anything but the original's 151,643 ranks."""
    ranks: dict[bytes, int] = {}
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); check the file or re-download qwen.tiktoken") from None
    except (ValueError, binascii.Error):
        raise UserError(f"{path} line {n} is not 'base64-token rank'; re-download qwen.tiktoken") from None
    if sorted(ranks.values()) != list(range(N_RANKS)):
        raise UserError(
            f"{path} has {len(ranks)} ranks, not the ranks 0..{N_RANKS - 1} of Qwen-1's vocabulary; "
            "re-download qwen.tiktoken"
        )
    return ranks


class QwenTokenizer(LegacyTokenizer):
    """Byte-level BPE with Qwen-1's special ids: 151643 <|endoftext|>, 151644 <|im_start|>,
    151645 <|im_end|>, 151646.. <|extra_0..204|>. Text is NFC-normalised first, as the original.

    `tokenizer(text)` and `encode` recognise special-token strings in the text; `encode_plain`
    treats them as ordinary text (how the chat prompt encodes roles and contents).
    """

    def __init__(self, encoding, name_or_path: str = ""):
        self.encoding = encoding
        self.name_or_path = name_or_path
        self.special_ids = {name: N_RANKS + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.special_names = {i: name for name, i in self.special_ids.items()}
        self.eod_id = self.eos_token_id = self.pad_token_id = self.special_ids[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special_ids[IM_START], self.special_ids[IM_END]
        self.bos_token_id = None
        self.eos_token = self.pad_token = ENDOFTEXT
        self.all_special_ids = sorted(self.special_names)

    @property
    def vocab_size(self) -> int:
        return N_RANKS + len(SPECIAL_TOKENS)

    def encode(self, text: str, add_special_tokens: bool = True, allowed_special="all", **_) -> list[int]:
        """Ids of the NFC text; `allowed_special=set()` makes special strings plain text (no BOS is
        ever added, so `add_special_tokens` changes nothing, as in the original)."""
        text = unicodedata.normalize("NFC", text)
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())

    def encode_plain(self, text: str) -> list[int]:
        return self.encode(text, allowed_special=set())

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            if tokens in self.special_ids:
                return self.special_ids[tokens]
            return self.encoding.encode_single_token(tokens.encode("utf-8"))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list:
        """Special ids as their names, other ids as their bytes (as the original)."""
        return [self.special_names.get(i) or self.encoding.decode_single_token_bytes(i) for i in id_list(ids)]

    def decode(self, ids, skip_special_tokens: bool = False, errors: str = "replace", **_) -> str:
        """The ids' bytes joined and read as UTF-8, invalid bytes as U+FFFD. Ids past the
        vocabulary (the model's padding rows, which a random model can emit) are dropped."""
        limit = N_RANKS if skip_special_tokens else self.vocab_size
        return self.encoding.decode([i for i in id_list(ids) if 0 <= i < limit], errors=errors)


def load_qwen_tokenizer(path) -> QwenTokenizer:
    """The tokenizer of a Qwen-1 checkpoint directory (reads only `qwen.tiktoken`)."""
    import tiktoken

    path = Path(path)
    vocab_file = path / "qwen.tiktoken" if path.is_dir() else path
    if not vocab_file.is_file():
        raise UserError(f"{vocab_file} is missing; a Qwen-1 checkpoint needs its qwen.tiktoken vocabulary")
    ranks = read_ranks(vocab_file)
    special = {name: N_RANKS + i for i, name in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding("qwen", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=special)
    return QwenTokenizer(encoding, name_or_path=str(path))


class QwenFormat:
    """The ChatML prompt Qwen-1's own `chat()` builds, token for token, and its reply post-processing.

    `<|im_start|>system\\n{system}<|im_end|>`, then per turn `\\n<|im_start|>{role}\\n{content}<|im_end|>`,
    then `\\n<|im_start|>assistant\\n`. Role, "\\n" and content are encoded separately, special
    strings inside them as plain text. The system text is the first message's when it is a system
    message, else "You are a helpful assistant.". Like the original, the oldest user/assistant
    pairs are left out once system + history reach `max_window_size` tokens.
    """

    name = "qwen"
    # The original chat() drops its last generated token; generating one fewer gives the same reply.
    drops_last_token = True

    def __init__(self, tokenizer: QwenTokenizer, max_window_size: int | None = MAX_WINDOW_SIZE):
        self.tokenizer = tokenizer
        self.max_window_size = max_window_size
        self.stop_token_ids = (tokenizer.eod_id, tokenizer.im_start_id, tokenizer.im_end_id)
        self.newline = tokenizer.encode("\n")

    def turn_ids(self, role: str, content: str) -> list[int]:
        """`<|im_start|>` role "\\n" content `<|im_end|>`."""
        tok = self.tokenizer
        return [tok.im_start_id] + tok.encode_plain(role) + self.newline + tok.encode_plain(content) + [tok.im_end_id]

    def encode(self, messages: Messages) -> list[int]:
        messages = [{"role": m.get("role") or "user", "content": flatten_content(m.get("content"))} for m in messages]
        system = DEFAULT_SYSTEM
        if messages and messages[0]["role"] == "system":
            system = messages.pop(0)["content"]
        query = messages.pop() if messages and messages[-1]["role"] == "user" else None
        system_ids = self.turn_ids("system", system)
        context: list[int] = []
        for unit in reversed(self._history_units(messages)):
            ids = [i for m in unit for i in self.newline + self.turn_ids(m["role"], m["content"])]
            if self.max_window_size is not None and len(system_ids) + len(ids) + len(context) >= self.max_window_size:
                break
            context = ids + context
        ids = system_ids + context
        if query is not None:
            ids += self.newline + self.turn_ids("user", query["content"])
        tok = self.tokenizer
        return ids + self.newline + [tok.im_start_id] + tok.encode("assistant") + self.newline

    @staticmethod
    def _history_units(messages: Messages) -> list[list[dict]]:
        """History in the units the original drops it by: a user message with the assistant reply
        after it; any other message stands alone."""
        units: list[list[dict]] = []
        for m in messages:
            if m["role"] == "assistant" and units and len(units[-1]) == 1 and units[-1][0]["role"] == "user":
                units[-1].append(m)
            else:
                units.append([m])
        return units

    def clean_reply(self, text: str) -> str:
        """The original's reply: text up to the first `<|im_start|>`/`<|im_end|>`, a trailing
        `<|endoftext|>` (the stop token) dropped, stripped."""
        for marker in (IM_START, IM_END):
            text = text.split(marker, 1)[0]
        if text.endswith(ENDOFTEXT):
            text = text[: -len(ENDOFTEXT)]
        return text.strip()
