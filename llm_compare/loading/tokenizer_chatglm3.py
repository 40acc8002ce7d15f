"""ChatGLM3-6B's tokenizer and chat prompt, rebuilt from `tokenizer.model` without its remote code.

The original is plain sentencepiece plus nine special ids appended after the sentencepiece
vocabulary. Converting it to a transformers tokenizer class is not exact (leading spaces, decode,
and `sop`/`eop` colliding with ordinary pieces), so this keeps sentencepiece and adds the ids by hand.
Checked id for id against tests/../fixtures/legacy/chatglm3-6b-tiny/reference.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_compare.chat_formats import Messages, flatten_content
from llm_compare.errors import UserError
from llm_compare.loading.tokenizer_base import LegacyTokenizer, id_list

SPECIAL_TOKENS = (
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
)  # fmt: skip
ROLES = ("system", "user", "assistant", "observation")
ROLE_ALIASES = {"tool": "observation", "function": "observation"}


class ChatGLM3Tokenizer(LegacyTokenizer):
    """sentencepiece + `[MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>`.

    Two encodings exist in the original and both are kept:
    - `tokenizer(text)` / `encode`: pieces turned into ids by name, a special name winning
      (so the ordinary piece "eop" becomes the special id), prefixed with `[gMASK] sop`;
    - `encode_plain`: sentencepiece ids as they are, which is what the chat prompt uses.
    """

    def __init__(self, sp_model, name_or_path: str = ""):
        self.sp = sp_model
        self.name_or_path = name_or_path
        self.sp_vocab_size = sp_model.get_piece_size()
        self.special_ids = {name: self.sp_vocab_size + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.special_names = {i: name for name, i in self.special_ids.items()}
        self.bos_token_id = sp_model.bos_id()  # exists in the vocabulary, never added
        self.eos_token_id = sp_model.eos_id()
        self.unk_token_id = sp_model.unk_id()
        self.pad_token_id = self.unk_token_id  # the original pads with <unk> (id 0)
        self.eos_token, self.pad_token, self.unk_token = "</s>", "<unk>", "<unk>"
        self.all_special_ids = sorted({self.unk_token_id, self.eos_token_id, self.pad_token_id})
        self._empty_ids = {self.bos_token_id, self.eos_token_id, self.pad_token_id}

    @property
    def vocab_size(self) -> int:
        return self.sp_vocab_size + len(SPECIAL_TOKENS)

    # -- encoding -----------------------------------------------------------------------------

    def prefix_ids(self) -> list[int]:
        return [self.special_ids["[gMASK]"], self.special_ids["sop"]]

    def tokenize(self, text: str) -> list[str]:
        """sentencepiece pieces; special-token strings in the text are ordinary text."""
        return self.sp.encode(text, out_type=str)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.special_ids.get(tokens, self.sp.piece_to_id(tokens))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def encode(self, text: str, add_special_tokens: bool = True, **_) -> list[int]:
        """Like the original `tokenizer.encode`: by piece name, `[gMASK] sop` in front by default."""
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        return self.prefix_ids() + ids if add_special_tokens else ids

    def encode_plain(self, text: str) -> list[int]:
        """sentencepiece ids of the text, no prefix: how the chat prompt encodes every part."""
        return self.sp.encode(text)

    # -- decoding -----------------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids) -> list[str]:
        """Pieces as the original names them: specials by name; bos, eos, pad and rows past the
        vocabulary (the model's padding rows) as empty strings."""
        out = []
        for i in id_list(ids):
            if i in self.special_names:
                out.append(self.special_names[i])
            elif i in self._empty_ids or i < 0 or i >= self.sp_vocab_size:
                out.append("")
            else:
                out.append(self.sp.id_to_piece(i))
        return out

    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        """Text of the ids as the original decodes it: every piece through sentencepiece at once.

        sentencepiece prints pieces it does not know (the special names) as they are, and drops
        the leading space only at the very start, so "▁" after a special token keeps its space.
        `skip_special_tokens` drops only unk/pad and eos, which are empty anyway (as the original).
        """
        ids = id_list(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        pieces = self.convert_ids_to_tokens(ids)
        return self.sp.decode_pieces(pieces) if pieces else ""


def load_chatglm3_tokenizer(path) -> ChatGLM3Tokenizer:
    """The tokenizer of a ChatGLM3 checkpoint directory (reads only `tokenizer.model`)."""
    import sentencepiece

    path = Path(path)
    model_file = path / "tokenizer.model" if path.is_dir() else path
    if not model_file.is_file():
        raise UserError(f"{model_file} is missing; a ChatGLM3 checkpoint needs its sentencepiece tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.load(str(model_file))
    except (OSError, RuntimeError) as e:
        raise UserError(f"cannot read {model_file} as a sentencepiece model ({e}); re-download tokenizer.model") from None
    if sp.eos_id() < 0 or sp.bos_id() < 0 or sp.unk_id() < 0:
        raise UserError(f"{model_file} lacks the <unk>, <s> or </s> piece ChatGLM3 needs; re-download tokenizer.model")
    return ChatGLM3Tokenizer(sp, name_or_path=str(path))


class ChatGLM3Format:
    """The prompt ChatGLM3's own `chat()` builds, token for token, and its reply post-processing.

    `[gMASK] sop`, then per message `<|role|>` + ids(metadata + "\\n") + ids(content), then
    `<|assistant|>`. A system message's `tools` (if given) are appended as the original does.
    """

    name = "chatglm3"
    # The original chat() drops its last generated token; generating one fewer gives the same reply.
    drops_last_token = True

    def __init__(self, tokenizer: ChatGLM3Tokenizer):
        self.tokenizer = tokenizer
        ids = tokenizer.special_ids
        self.stop_token_ids = (tokenizer.eos_token_id, ids["<|user|>"], ids["<|observation|>"])

    def message_ids(self, role: str, metadata: str, content: str) -> list[int]:
        tok = self.tokenizer
        return [tok.special_ids[f"<|{role}|>"]] + tok.encode_plain(f"{metadata}\n") + tok.encode_plain(content)

    def encode(self, messages: Messages) -> list[int]:
        ids = self.tokenizer.prefix_ids()
        for m in messages:
            role = ROLE_ALIASES.get(m.get("role"), m.get("role"))
            if role not in ROLES:
                raise UserError(f"ChatGLM3 has no {m.get('role')!r} role; use system, user, assistant or observation")
            content = flatten_content(m.get("content"))
            if role == "system" and m.get("tools"):
                content += "\n" + json.dumps(m["tools"], indent=4, ensure_ascii=False)
            ids += self.message_ids(role, m.get("metadata") or "", content)
        return ids + [self.tokenizer.special_ids["<|assistant|>"]]

    def clean_reply(self, text: str) -> str:
        """The original's post-processing: the stop token dropped, then for each `<|assistant|>`
        part the first line is metadata; with empty metadata the reply is the stripped text
        (with "[[训练时间]]" replaced by "2023年", as the original); with a tool name as metadata
        (a tool call) the reply is the text after that line."""
        for stop in ("<|user|>", "<|observation|>"):
            if text.endswith(stop):
                text = text[: -len(stop)]
                break
        content = ""
        for part in text.split("<|assistant|>"):
            metadata, content = part.split("\n", 1) if "\n" in part else ("", part)
            if not metadata.strip():
                content = content.strip().replace("[[训练时间]]", "2023年")
            else:
                content = content.strip()
        return content
