"""Tokenizer metadata for an exported GGUF, from the project's own tokenizers.

The app never lets llama.cpp tokenize or detokenize an exported model: prompts are encoded and
replies decoded by the same tokenizer and chat format as the transformers path. The vocabulary
written here is for llama.cpp to load the file (its token count must equal the embedding rows,
so rows past the tokenizer are filled with unused placeholder tokens) and for anyone running the
file with llama.cpp directly: it describes the real tokenizer as closely as llama.cpp's models allow.

- ChatGLM3: sentencepiece pieces, scores and types, then the nine appended specials (control);
  tokenizer model "llama" (sentencepiece).
- Qwen-1: the byte-level ranks of `qwen.tiktoken` in GPT-2's byte-to-unicode spelling, merges =
  every split of a token into two known tokens, ordered by the merged token's rank; model "gpt2",
  pre-tokenizer "qwen2" (the same split pattern: digits one at a time).
- native directories: `tokenizer.json`'s vocabulary and merges (byte-level BPE: "gpt2"; other
  models: "llama" with the vocabulary only), its special tokens and chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.loading.tokenizer_chatglm3 import load_chatglm3_tokenizer
from llm_compare.loading.tokenizer_qwen import ENDOFTEXT, IM_END, SPECIAL_TOKENS, read_ranks

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model
    tokens: list[str]
    types: list[int]
    pre: str | None = None
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict = field(default_factory=dict)  # "bos"/"eos"/"unk"/"pad"/"eot" -> id
    add_bos: bool = False
    chat_template: str | None = None

    def pad_to(self, rows: int) -> None:
        """Placeholder tokens up to the embedding's row count (llama.cpp requires them equal)."""
        if len(self.tokens) > rows:
            raise UserError(f"the tokenizer has {len(self.tokens)} tokens but the model only {rows} embedding "
                            "rows; the checkpoint and its tokenizer do not belong together")
        for i in range(len(self.tokens), rows):
            self.tokens.append(f"<|unused_{i}|>")
            self.types.append(UNUSED)
            if self.scores is not None:
                self.scores.append(-1e9)

    def dedupe(self) -> None:
        """llama.cpp aborts on two tokens with one spelling (ChatGLM3's special `sop`/`eop` can equal
        ordinary pieces): later ones get a suffix; the app never tokenizes through this table."""
        seen: set[str] = set()
        for i, token in enumerate(self.tokens):
            if token in seen:
                token = self.tokens[i] = f"{token}<|dup_{i}|>"
            seen.add(token)

    def write(self, writer) -> None:
        self.dedupe()
        writer.add_tokenizer_model(self.model)
        if self.pre:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
                  "pad": writer.add_pad_token_id, "eot": writer.add_eot_token_id}
        for kind, token_id in self.special.items():
            if token_id is not None:
                adders[kind](int(token_id))
        writer.add_add_bos_token(self.add_bos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what byte-level BPE vocabularies spell)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def spell(data: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


def chatglm3_vocab(tokenizer) -> Vocab:
    sp = tokenizer.sp
    tokens, types, scores = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_unused(i):
            types.append(UNUSED)
        elif sp.is_byte(i):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    for name in tokenizer.special_ids:  # in id order: appended right after the sentencepiece pieces
        tokens.append(name)
        types.append(CONTROL)
        scores.append(0.0)
    special = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
               "pad": tokenizer.pad_token_id, "eot": tokenizer.special_ids["<|user|>"]}
    return Vocab("llama", tokens, types, scores=scores, special=special)


def qwen_vocab(directory: Path) -> Vocab:
    ranks = read_ranks(directory / "qwen.tiktoken")
    by_rank = sorted(ranks, key=ranks.__getitem__)
    tokens = [spell(b) for b in by_rank]
    merges = []
    for data in by_rank:  # rank order: the merged token's rank is the merge's priority
        for cut in range(1, len(data)):
            left, right = data[:cut], data[cut:]
            if left in ranks and right in ranks:
                merges.append(f"{spell(left)} {spell(right)}")
    types = [NORMAL] * len(tokens) + [CONTROL] * len(SPECIAL_TOKENS)
    tokens += list(SPECIAL_TOKENS)
    eod, im_end = len(by_rank) + SPECIAL_TOKENS.index(ENDOFTEXT), len(by_rank) + SPECIAL_TOKENS.index(IM_END)
    special = {"bos": eod, "eos": eod, "pad": eod, "eot": im_end}
    return Vocab("gpt2", tokens, types, pre="qwen2", merges=merges, special=special)


def hf_vocab(directory: Path) -> Vocab:
    """A native directory's tokenizer.json (+ tokenizer_config.json for specials and template)."""
    file = directory / "tokenizer.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except FileNotFoundError:
        raise UserError(f"{directory} has no tokenizer.json; the GGUF export needs a fast tokenizer file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the tokenizer files in {directory} ({e})") from None
    model = data.get("model") or {}
    vocab = dict(model.get("vocab") or {})
    added = {t["content"]: t for t in data.get("added_tokens") or []}
    for content, token in added.items():
        vocab[content] = token["id"]
    size = max(vocab.values(), default=-1) + 1
    tokens, types = [f"<|unused_{i}|>" for i in range(size)], [UNUSED] * size
    for content, i in vocab.items():
        tokens[i] = content
        types[i] = CONTROL if added.get(content, {}).get("special") else (USER_DEFINED if content in added else NORMAL)
    byte_level = "ByteLevel" in json.dumps(data.get("decoder") or {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    ids = {name: vocab.get(_token_text(config.get(f"{name}_token"))) for name in ("bos", "eos", "unk", "pad")}
    template = config.get("chat_template") if isinstance(config.get("chat_template"), str) else None
    jinja = directory / "chat_template.jinja"  # where transformers 5 saves a template
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    if byte_level and model.get("type") == "BPE":
        return Vocab("gpt2", tokens, types, pre="default", merges=merges, special=ids,
                     add_bos=bool(config.get("add_bos_token")), chat_template=template)
    scores = [0.0] * size
    return Vocab("llama", tokens, types, scores=scores, special=ids, add_bos=bool(config.get("add_bos_token")),
                 chat_template=template)


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def chatglm3_directory_vocab(directory: Path) -> Vocab:
    return chatglm3_vocab(load_chatglm3_tokenizer(directory))


VOCABS = {"chatglm3": chatglm3_directory_vocab, "qwen": qwen_vocab, "hf": hf_vocab}  # a family's `vocab`


def vocab_for(kind: str, directory: Path) -> Vocab:
    """The GGUF vocabulary of a model directory whose family names `kind` (families.Family.vocab)."""
    return VOCABS[kind](directory)
