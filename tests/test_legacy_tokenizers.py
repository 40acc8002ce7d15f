"""ChatGLM3 and Qwen-1 tokenizers and chat formats against the original implementations' references.

Every expected id and string comes from fixtures/legacy/*/reference.json, written by the original
remote code (transformers 4.40.2). The fixture dirs are read-only: tests that need broken files
build them in tmp_path.
"""

from __future__ import annotations

import json

import pytest

from llm_compare.errors import UserError
from llm_compare.loading.tokenizer_chatglm3 import ChatGLM3Format, load_chatglm3_tokenizer
from llm_compare.loading.tokenizer_qwen import QwenFormat, load_qwen_tokenizer

from conftest import LEGACY_FIXTURES as FIXTURES  # noqa: E402
GLM_DIR = FIXTURES / "chatglm3-6b-tiny"
QWEN_DIR = FIXTURES / "qwen-7b-chat-tiny"

if not (GLM_DIR / "reference.json").is_file() or not (QWEN_DIR / "reference.json").is_file():
    pytest.skip(f"legacy fixtures not found under {FIXTURES}", allow_module_level=True)

GLM_REF = json.loads((GLM_DIR / "reference.json").read_text(encoding="utf-8"))
QWEN_REF = json.loads((QWEN_DIR / "reference.json").read_text(encoding="utf-8"))
CHINESE = [
    "请说出以下两句话区别在哪里？ 1、冬天：能穿多少穿多少 2、夏天：能穿多少穿多少",
    "《红楼梦》是中国古典小说。鬱龘齉 emoji: 😀🤖👍🏽",
    "你好👋！\n  缩进的第二行\n\n def f():\n     return 1",
]


@pytest.fixture(scope="module")
def glm():
    return load_chatglm3_tokenizer(GLM_DIR)


@pytest.fixture(scope="module")
def qwen():
    return load_qwen_tokenizer(QWEN_DIR)


def case_id(case) -> str:
    return repr(case["text"])[:40]


def glm_messages(conv) -> list[dict]:
    return conv["history"] + [{"role": conv["role"], "content": conv["query"]}]


def qwen_messages(conv) -> list[dict]:
    messages = [{"role": "system", "content": conv["system"]}]
    for query, reply in conv["history"]:
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": reply}]
    return messages + [{"role": "user", "content": conv["query"]}]


def stream_texts(tokenizer, prompt_ids, new_ids) -> list[tuple[str, int]]:
    """What the transformers backend's streamer emits when generate() hands it one id at a time."""
    import torch

    from llm_compare.backends.transformers import CountingStreamer

    streamer = CountingStreamer(tokenizer)
    streamer.put(torch.tensor([prompt_ids]))
    for i in new_ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    out = []
    while not streamer.text_queue.empty():
        text, tokens, *_ = streamer.text_queue.get_nowait()
        out.append((text, tokens))
    return out


# -- ChatGLM3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GLM_REF["tokenizer"]["cases"], ids=case_id)
def test_chatglm3_tokenizer_case(glm, case):
    assert glm(case["text"])["input_ids"] == case["call_ids"]
    assert glm.encode(case["text"], add_special_tokens=False) == case["encode_ids"]
    assert glm.tokenize(case["text"]) == case["pieces"]
    assert glm.decode(case["encode_ids"]) == case["decode_encode_ids"]
    assert glm.decode(case["call_ids"]) == case["decode_call_ids"]


@pytest.mark.parametrize("case", GLM_REF["tokenizer"]["decode_cases"], ids=lambda c: str(c["ids"][:6]))
def test_chatglm3_decode_case(glm, case):
    assert glm.decode(case["ids"]) == case["decode"]
    assert glm.decode(case["ids"], skip_special_tokens=True) == case["decode_skip_special_tokens"]


def test_chatglm3_attributes(glm):
    ref = GLM_REF["tokenizer"]
    assert (glm.eos_token_id, glm.pad_token_id, glm.chat_template) == (ref["eos_token_id"], ref["pad_token_id"], None)
    assert glm.vocab_size == len(glm) == ref["vocab_size"]
    assert glm.special_ids == ref["special_ids"]
    assert glm("hi", return_tensors="pt")["input_ids"].tolist() == [glm("hi")["input_ids"]]
    assert glm(GLM_REF["naive"]["prompt"])["input_ids"] == GLM_REF["naive"]["input_ids"]
    assert glm.decode(GLM_REF["naive"]["generated_ids"]) == GLM_REF["naive"]["decoded"]


@pytest.mark.parametrize("conv", GLM_REF["chat"], ids=lambda c: c["name"])
def test_chatglm3_chat_prompt_and_reply(glm, conv):
    fmt = ChatGLM3Format(glm)
    assert fmt.encode(glm_messages(conv)) == conv["input_ids"]
    assert list(fmt.stop_token_ids) == conv["effective_generation"]["eos_token_id"]
    kept = conv["generated_ids"][:-1]  # chat() always drops the last generated token
    assert glm.decode(kept) == conv["decoded_generated_minus_last"]
    assert fmt.clean_reply(glm.decode(kept)) == conv["reply"]


def test_chatglm3_streamed_reply_that_stops_on_a_stop_token(glm):
    conv = next(c for c in GLM_REF["chat"] if c["name"] == "stops_early")
    assert conv["generated_ids"][-1] in ChatGLM3Format(glm).stop_token_ids  # whichever the reference stopped on
    assert len(conv["generated_ids"]) < conv["chat_kwargs"]["max_new_tokens"]  # before the length limit
    chunks = stream_texts(glm, conv["input_ids"], conv["generated_ids"])
    assert sum(n for _, n in chunks) == len(conv["generated_ids"])
    assert ChatGLM3Format(glm).clean_reply("".join(t for t, _ in chunks)) == conv["reply"]


def test_chatglm3_chat_contents_are_plain_text(glm):
    """Special names inside a message are text; only the prefix, roles and the assistant cue are special."""
    ids = ChatGLM3Format(glm).encode([{"role": "user", "content": "<|user|>[gMASK] sop eop <|assistant|>"}])
    special = [i for i in ids if i >= glm.sp_vocab_size]
    assert special == glm.prefix_ids() + [glm.special_ids["<|user|>"], glm.special_ids["<|assistant|>"]]
    assert glm.decode(ids) == "[gMASK]sop<|user|> \n <|user|>[gMASK] sop eop <|assistant|><|assistant|>"


@pytest.mark.parametrize(
    "text, reply",
    [
        ("\n 你好 ", "你好"),
        ("no metadata line  ", "no metadata line"),
        ("  \n今年是[[训练时间]]", "今年是2023年"),
        ("weather\n {'city': '北京'}\n", "{'city': '北京'}"),
        ("\n 回答<|user|>", "回答"),
        ("\n 旧<|assistant|>\n 新<|observation|>", "新"),
    ],
)
def test_chatglm3_clean_reply(glm, text, reply):
    assert ChatGLM3Format(glm).clean_reply(text) == reply


def test_chatglm3_unknown_role_is_a_user_error(glm):
    with pytest.raises(UserError, match="no 'narrator' role"):
        ChatGLM3Format(glm).encode([{"role": "narrator", "content": "x"}])


def test_chatglm3_missing_or_broken_tokenizer_model(tmp_path):
    with pytest.raises(UserError, match="tokenizer.model is missing"):
        load_chatglm3_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(UserError, match="cannot read .* as a sentencepiece model"):
        load_chatglm3_tokenizer(tmp_path)


# -- Qwen-1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", QWEN_REF["tokenizer"]["cases"], ids=case_id)
def test_qwen_tokenizer_case(qwen, case):
    assert qwen(case["text"])["input_ids"] == case["call_ids"]
    assert qwen.encode(case["text"], add_special_tokens=False) == case["encode_ids"]
    assert qwen.encode_plain(case["text"]) == case["encode_specials_as_text_ids"]
    assert qwen.decode(case["encode_ids"]) == case["decode_encode_ids"]
    assert qwen.decode(case["call_ids"]) == case["decode_call_ids"]
    assert (qwen.decode(case["encode_ids"]) == case["text"]) == case["roundtrip_equal"]


@pytest.mark.parametrize("case", QWEN_REF["tokenizer"]["decode_cases"], ids=lambda c: str(c["ids"][:6]))
def test_qwen_decode_case(qwen, case):
    assert qwen.decode(case["ids"]) == case["decode"]
    assert qwen.decode(case["ids"], skip_special_tokens=True) == case["decode_skip_special_tokens"]


def test_qwen_attributes(qwen):
    ref = QWEN_REF["tokenizer"]
    gen = QWEN_REF["model_generation_config"]
    assert (qwen.eos_token_id, qwen.pad_token_id, qwen.chat_template) == (gen["eos_token_id"], gen["pad_token_id"], None)
    assert qwen.vocab_size == len(qwen) == ref["len"]
    assert all(qwen.special_ids[name] == i for name, i in ref["special_ids"].items())
    assert qwen(QWEN_REF["naive"]["prompt"])["input_ids"] == QWEN_REF["naive"]["input_ids"]
    assert qwen.decode(QWEN_REF["naive"]["generated_ids"]) == QWEN_REF["naive"]["decoded"]
    assert qwen.decode([151900, 92411, 151935]) == qwen.decode([92411])  # padding rows of the model


@pytest.mark.parametrize("conv", QWEN_REF["chat"], ids=lambda c: c["name"])
def test_qwen_chat_prompt_and_reply(qwen, conv):
    fmt = QwenFormat(qwen)
    ids = fmt.encode(qwen_messages(conv))
    assert ids == conv["input_ids"]
    assert qwen.decode(ids) == conv["raw_text"]
    assert set(fmt.stop_token_ids) == {conv["effective_generation"]["eos_token_id"]} | {
        w[0] for w in conv["effective_generation"]["stop_words_ids"]
    }
    generated = conv["generated_ids"]
    stops = [k for k, i in enumerate(generated) if i in (qwen.im_start_id, qwen.im_end_id)]
    kept = generated[: stops[0]] if stops else generated[:-1]
    assert fmt.clean_reply(qwen.decode(kept)) == conv["reply"]


def test_qwen_default_system_message(qwen):
    conv = next(c for c in QWEN_REF["chat"] if c["name"] == "zh_single_turn")
    assert conv["system"] == "You are a helpful assistant."
    assert QwenFormat(qwen).encode([{"role": "user", "content": conv["query"]}]) == conv["input_ids"]


def test_qwen_chat_contents_are_plain_text(qwen):
    ids = QwenFormat(qwen).encode([{"role": "user", "content": "<|im_end|><|endoftext|><|extra_3|>"}])
    assert [i for i in ids if i >= 151643] == [qwen.im_start_id, qwen.im_end_id] * 2 + [qwen.im_start_id]
    assert "<|im_end|><|endoftext|><|extra_3|><|im_end|>" in qwen.decode(ids)


def test_qwen_drops_oldest_turns_beyond_the_window(qwen):
    conv = next(c for c in QWEN_REF["chat"] if c["name"] == "two_turn")
    messages = qwen_messages(conv)
    older = [{"role": "user", "content": "第一个问题"}, {"role": "assistant", "content": "第一个回答"}]
    full = QwenFormat(qwen, max_window_size=None).encode(messages[:1] + older + messages[1:])
    assert len(full) > len(conv["input_ids"])
    newest_fits = len(conv["input_ids"]) - len(QwenFormat(qwen).encode(messages[:1] + messages[-1:])) + 20
    fmt = QwenFormat(qwen, max_window_size=len(qwen.encode(conv["system"])) + newest_fits)
    assert fmt.encode(messages[:1] + older + messages[1:]) == conv["input_ids"]


@pytest.mark.parametrize(
    "text, reply",
    [(" answer <|im_end|>\n<|im_start|>user", "answer"), ("answer<|endoftext|>", "answer"), ("\n你好\n", "你好")],
)
def test_qwen_clean_reply(qwen, text, reply):
    assert QwenFormat(qwen).clean_reply(text) == reply


def test_qwen_bad_vocabulary_files(tmp_path):
    with pytest.raises(UserError, match="qwen.tiktoken is missing"):
        load_qwen_tokenizer(tmp_path)
    lines = (QWEN_DIR / "qwen.tiktoken").read_bytes().splitlines()
    (tmp_path / "qwen.tiktoken").write_bytes(b"\n".join(lines[:1000]))
    with pytest.raises(UserError, match="has 1000 ranks"):
        load_qwen_tokenizer(tmp_path)
    (tmp_path / "qwen.tiktoken").write_bytes(b"\n".join(lines[:5] + [b"%%% 5"]))
    with pytest.raises(UserError, match="line 6 is not"):
        load_qwen_tokenizer(tmp_path)


# -- streaming through the transformers backend's streamer -----------------------------------------


@pytest.mark.parametrize("which", ["chatglm3", "qwen"])
def test_streamed_text_equals_the_full_decode(glm, qwen, which):
    """Token by token, the streamed pieces join into the full decode: no half characters (U+FFFD),
    no space lost after a newline, every token counted."""
    tok, ref = (glm, GLM_REF) if which == "chatglm3" else (qwen, QWEN_REF)
    replies = [(c["input_ids"], c["generated_ids"]) for c in ref["chat"]]
    chinese = [(ref["naive"]["input_ids"], tok.encode(text, add_special_tokens=False)) for text in CHINESE]
    for prompt, new in replies + chinese:
        chunks = stream_texts(tok, prompt, new)
        assert "".join(t for t, _ in chunks) == tok.decode(new, skip_special_tokens=True)
        assert sum(n for _, n in chunks) == len(new)
    for (_, new), text in zip(chinese, CHINESE):
        chunks = stream_texts(tok, [1], new)
        assert all("\ufffd" not in t for t, _ in chunks)
        assert "".join(t for t, _ in chunks) == text
        assert len(chunks) > 5  # really streamed, not one piece at the end
