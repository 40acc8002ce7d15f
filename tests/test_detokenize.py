"""The one incremental decoder of the local backends (backends/detokenize.py): streamed pieces join
into the one-shot decode of the same ids, and no piece holds half a character (U+FFFD), for Chinese
and emoji split over tokens by byte-level BPE, by byte-fallback tokens and by raw token bytes."""

from __future__ import annotations

import pytest

from llm_compare.backends.detokenize import Detokenizer, for_llama, for_tokenizer

TEXT = "hello world 你好，世界 🤖🎨 paint\n  indented 请说出区别 ✓ end"


def stream(decoder: Detokenizer, ids) -> list[str]:
    pieces = [decoder.feed(i) for i in ids]
    return [p for p in pieces + [decoder.flush()] if p]


def assert_streams_like_one_shot(decoder: Detokenizer, ids, one_shot: str) -> list[str]:
    pieces = stream(decoder, ids)
    assert "".join(pieces) == one_shot
    assert not any("\ufffd" in p for p in pieces), pieces
    return pieces


def test_raw_bytes_split_inside_every_character_are_held_until_complete():
    data = TEXT.encode()
    vocab = [data[i:i + 1] for i in range(len(data))]  # one byte a token: every multi-byte char is split
    decoder = Detokenizer(lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace"))
    pieces = assert_streams_like_one_shot(decoder, range(len(vocab)), TEXT)
    assert "你" in pieces and "🤖" in pieces  # released whole, as soon as their last byte arrived
    first = Detokenizer(decoder.decode)
    assert [first.feed(i) for i in range(12, 15)] == ["", "", "你"]


def test_invalid_bytes_do_not_stall_the_stream_and_a_cut_end_is_flushed():
    vocab = [b"ok ", b"\xff", b" then", b"\xe4\xbd"]
    decoder = Detokenizer(lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace"))
    assert [decoder.feed(i) for i in range(3)] == ["ok ", "", "\ufffd then"]  # shown with the next token
    assert decoder.feed(3) == "" and decoder.flush() == "\ufffd"  # the end is cut mid-character


def byte_fallback_tokenizer():
    """A Llama-style sentencepiece tokenizer (built here): a few pieces, `<0xNN>` byte-fallback
    tokens for everything else, and a decoder that strips the leading space of every decode."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁w", "\n", "你", "▁▁"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "h"), ("▁", "w"), ("▁", "▁")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_byte_fallback_tokens_and_leading_spaces():
    tok = byte_fallback_tokenizer()
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert "<0xF0>" in tok.convert_ids_to_tokens(ids)  # the emoji really is split into byte tokens
    one_shot = tok.decode(ids, skip_special_tokens=True)
    assert one_shot == TEXT
    pieces = assert_streams_like_one_shot(for_tokenizer(tok), ids, one_shot)
    assert len(pieces) > 20
    # special tokens are skipped as in the one-shot decode, wherever they fall
    with_eos = ids[:5] + [tok.eos_token_id] + ids[5:] + [tok.eos_token_id]
    assert_streams_like_one_shot(for_tokenizer(tok), with_eos, tok.decode(with_eos, skip_special_tokens=True))


def test_tiny_models_byte_level_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids)  # some token holds half a character
    assert_streams_like_one_shot(for_tokenizer(tok), ids, tok.decode(ids, skip_special_tokens=True))


def test_transformers_streamer_emits_whole_characters_and_counts_every_token(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer

    from llm_compare.backends.transformers import CountingStreamer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.encode(TEXT, add_special_tokens=False)
    streamer = CountingStreamer(tok)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, as generate() puts it first
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    items = [streamer.text_queue.get_nowait() for _ in range(streamer.text_queue.qsize())]
    assert "".join(text for text, *_ in items) == tok.decode(ids)
    assert not any("\ufffd" in text for text, *_ in items)
    assert sum(n for _, n, *_ in items) == len(ids)


@pytest.fixture(scope="module")
def smollm2_vocab():
    import llama_cpp

    from llm_compare.loading import embedded_path

    llm = llama_cpp.Llama(model_path=str(embedded_path("smollm2")), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def test_embedded_gguf_through_llama_cpp_token_bytes(smollm2_vocab):
    llm = smollm2_vocab
    ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    assert any(len(llm.detokenize([i])) and llm.detokenize([i]).decode("utf-8", "replace").endswith("\ufffd")
               for i in ids)  # some token's bytes end inside a character
    one_shot = llm.detokenize(ids).decode("utf-8")
    assert one_shot == TEXT
    assert_streams_like_one_shot(for_llama(llm), ids, one_shot)
