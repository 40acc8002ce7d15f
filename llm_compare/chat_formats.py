"""How a conversation becomes prompt token ids, and which tokens end a reply.

`ChatFormat` is the interface; `TemplateFormat` uses the tokenizer's own chat template,
`RawFormat` feeds the text as the seed scripts did (`tokenizer(prompt)`). The legacy loaders
(`loading/legacy_*.py`) provide formats reproducing ChatGLM3's and Qwen-1's original `chat()`.
"""

from __future__ import annotations

from typing import Protocol

from llm_compare.errors import UserError

Messages = list[dict]


class ChatFormat(Protocol):
    name: str
    stop_token_ids: tuple[int, ...]

    def encode(self, messages: Messages) -> list[int]:
        """Prompt ids for the conversation, ending where the assistant's reply begins."""

    def clean_reply(self, text: str) -> str:
        """The reply as the model's own chat() would return it (e.g. metadata line removed)."""


def flatten_content(content) -> str:
    """Message content as plain text (Gradio 6 sends lists of typed blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or ""
    if isinstance(content, (list, tuple)):
        return "".join(flatten_content(c) for c in content)
    return str(content)


def normalize_messages(messages: Messages) -> Messages:
    return [{"role": m["role"], "content": flatten_content(m.get("content"))} for m in messages]


def _eos_ids(tokenizer, generation_config=None) -> tuple[int, ...]:
    ids = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        ids.extend(source if isinstance(source, (list, tuple)) else [source])
    return tuple(dict.fromkeys(int(i) for i in ids))


class TemplateFormat:
    """The tokenizer's chat template (ChatML for SmolLM2 and Qwen2, etc.)."""

    name = "template"

    def __init__(self, tokenizer, generation_config=None):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("this model's tokenizer has no chat template; set chat_format = \"raw\" for it")
        self.tokenizer = tokenizer
        self.stop_token_ids = _eos_ids(tokenizer, generation_config)

    def encode(self, messages: Messages) -> list[int]:
        out = self.tokenizer.apply_chat_template(
            normalize_messages(messages), add_generation_prompt=True, tokenize=True
        )
        if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
            out = out["input_ids"]
        if out and isinstance(out[0], list):
            out = out[0]
        return list(out)

    def clean_reply(self, text: str) -> str:
        return text.strip()


class RawFormat:
    """The seeds' path: `tokenizer(prompt).input_ids`, with earlier turns joined by newlines."""

    name = "raw"

    def __init__(self, tokenizer, generation_config=None):
        self.tokenizer = tokenizer
        self.stop_token_ids = _eos_ids(tokenizer, generation_config)

    def encode(self, messages: Messages) -> list[int]:
        text = "\n".join(m["content"] for m in normalize_messages(messages) if m["content"])
        return list(self.tokenizer(text)["input_ids"])

    def clean_reply(self, text: str) -> str:
        return text.strip()


def choose_format(requested: str, tokenizer, generation_config=None, native: ChatFormat | None = None) -> ChatFormat:
    """Pick the format for a spec's `chat_format` ("auto" prefers a loader's native format, then the template)."""
    if requested == "raw":
        return RawFormat(tokenizer, generation_config)
    if requested in ("auto", "chatglm3", "qwen") and native is not None:
        if requested not in ("auto", native.name):
            raise UserError(f"chat_format {requested!r} does not fit this model; its native format is {native.name!r}")
        return native
    if requested in ("chatglm3", "qwen"):
        raise UserError(f"chat_format {requested!r} needs a {requested} checkpoint; use \"auto\" or \"raw\"")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "this model has no chat template and no known chat format; "
            "set chat_format = \"raw\" to feed the prompt text as is"
        )
    return TemplateFormat(tokenizer, generation_config)
