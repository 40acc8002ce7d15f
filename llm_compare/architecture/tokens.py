"""Tokenizer facts: its kind, size and special tokens, the chat format's first turn as tokens, and
tokens per character on the five seed prompts and an English sample.

The same Chinese answer costs two models different time partly because one needs more tokens for
it: `tokens_per_char` says how many. Only tokenizer files are read (never weights).
"""

from __future__ import annotations

import json

from llm_compare.errors import UserError
from llm_compare.presets import load_suite

SAMPLE_TURN = [{"role": "user", "content": "你好！Hello!"}]
ENGLISH_SAMPLE = ("The quick brown fox jumps over the lazy dog. Memory bandwidth, not arithmetic, limits how fast "
                  "a language model writes its answer on a CPU: every new token reads all of the weights once.")


def plain_ids(tokenizer, text: str, split_specials: bool = False) -> list[int]:
    """Ids of text alone (no BOS / [gMASK] prefix); `split_specials`: a special token's string in the
    text is read as plain text (as llama.cpp's tokenize(special=False) reads it), not as that token."""
    if hasattr(tokenizer, "encode_plain"):
        return list(tokenizer.encode_plain(text))
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split_specials)["input_ids"])


def piece(tokenizer, token_id: int) -> str:
    """One token as readable text: sentencepiece pieces as they are (▁ = space), byte-level tokens
    decoded, bytes that are part of a longer character as \\x escapes."""
    raw = tokenizer.convert_ids_to_tokens([token_id])[0]
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    if hasattr(tokenizer, "sp") or raw is None:
        return raw or ""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        return text
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    if all(c in byte_of for c in raw):  # a byte-level token holding part of a character
        return bytes(byte_of[c] for c in raw).decode("utf-8", "backslashreplace")
    return raw


def tokenizer_kind(tokenizer) -> str | None:
    """SentencePiece BPE / byte-level BPE / ..., from the tokenizer object itself."""
    if hasattr(tokenizer, "sp"):
        return sentencepiece_kind(tokenizer.sp.serialized_model_proto())
    if hasattr(tokenizer, "encoding"):
        return "byte-level BPE (tiktoken ranks)"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model = (spec.get("model") or {}).get("type")
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or "ByteLevel" in json.dumps(spec.get("decoder"))
    if model == "BPE":
        return "byte-level BPE" if byte_level else "BPE" + (", byte fallback" if spec["model"].get("byte_fallback") else "")
    return model


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value, shift, pos = value | (byte & 0x7F) << shift, shift + 7, pos + 1
        if byte < 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            pos += {1: 8, 5: 4}.get(wire, len(data))
            continue
        yield number, value


def sentencepiece_kind(proto: bytes) -> str:
    """"SentencePiece BPE, byte fallback" etc. from the model's TrainerSpec (ModelProto field 2:
    model_type is field 3, byte_fallback field 35), read without protobuf installed."""
    try:
        spec = next((v for n, v in _fields(proto) if n == 2), b"")
        trainer = dict(_fields(spec))
    except (IndexError, TypeError):
        return "SentencePiece"
    kind = {1: "Unigram", 2: "BPE", 3: "word", 4: "char"}.get(trainer.get(3, 1), "")
    return f"SentencePiece {kind}" + (", byte fallback" if trainer.get(35) else "")


def special_tokens(tokenizer) -> list[str]:
    names = getattr(tokenizer, "special_ids", None)
    if names:
        found = list(names)
    else:
        found = list(dict.fromkeys(getattr(tokenizer, "all_special_tokens", []) or []))
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        found += [t.content for t in added.values() if getattr(t, "special", False) and t.content not in found]
    for attr in ("eos_token", "pad_token", "unk_token"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, str) and value and value not in found:
            found.append(value)
    return found


def efficiency(tokenizer, texts: list[str]) -> dict:
    counts = [len(plain_ids(tokenizer, t)) for t in texts]
    chars = sum(len(t) for t in texts)
    tokens = sum(counts)
    return {"tokens": counts, "chars": chars, "tokens_per_char": tokens / chars if chars else None,
            "chars_per_token": chars / tokens if tokens else None}


def tokenizer_facts(load_tokenizer) -> dict:
    """Everything the Vocabulary and Tokenizer-efficiency rows show; UserError when unreadable."""
    tokenizer, fmt = load_tokenizer()
    seeds = [p.text for p in load_suite("seeds")[1]]
    seed, english = efficiency(tokenizer, seeds), efficiency(tokenizer, [ENGLISH_SAMPLE])
    specials = special_tokens(tokenizer)
    facts = {
        "tokenizer_kind": tokenizer_kind(tokenizer),
        "tokenizer_vocab_size": len(tokenizer),
        "special_tokens": specials,
        "special_token_count": len(specials),
        "seed_prompt_tokens": seed["tokens"],
        "tokens_per_char_seed_prompts": seed["tokens_per_char"],
        "chars_per_token_seed_prompts": seed["chars_per_token"],
        "tokens_per_char_english": english["tokens_per_char"],
        "chars_per_token_english": english["chars_per_token"],
        "chat_format": fmt.name if fmt else None,
    }
    if fmt is not None:
        try:
            ids = fmt.encode(SAMPLE_TURN)
            facts["first_turn_tokens"] = [piece(tokenizer, i) for i in ids]
        except UserError:
            pass
    return facts
