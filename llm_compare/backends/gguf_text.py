"""A plain GGUF file's own text side on llama.cpp: the file checked, its chat template (its ids become
text through the shared `detokenize.for_llama`).

A model exported from a directory uses the directory's tokenizer instead (`llamacpp_exported.TextSide`).
"""

from __future__ import annotations

from pathlib import Path

from llm_compare.backends.base import Messages
from llm_compare.chat_formats import normalize_messages
from llm_compare.errors import UserError
from llm_compare.loading.gguf.header import check_gguf
from llm_compare.loading.source import embedded_path


def gguf_path(source: str) -> Path:
    """The GGUF file a llamacpp spec names ("embedded:NAME" or a path), checked to exist and be whole."""
    if source.startswith("embedded:"):
        path = embedded_path(source.split(":", 1)[1])
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file {path} does not exist; the llamacpp backend needs a .gguf file")
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{path} is not a .gguf file; the llamacpp backend reads GGUF models only")
    check_gguf(path)  # a cut file: one line here, not a failure inside llama.cpp
    return path


class GgufPrompt:
    """Conversation -> prompt ids: the GGUF's chat template ("auto"/"template") or plain text ("raw")."""

    def __init__(self, llm, chat_format: str, path: Path):
        self.llm = llm
        self.name = "raw" if chat_format == "raw" else "template"
        if chat_format in ("chatglm3", "qwen"):
            raise UserError(
                f"chat_format {chat_format!r} is not available for the llamacpp backend; "
                "use \"auto\" (the GGUF's template) or \"raw\""
            )
        self.formatter = None
        if self.name == "template":
            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise UserError(f"{path.name} has no chat template; set chat_format = \"raw\" for it")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = llm._model
            eos, bos = llm.token_eos(), llm.token_bos()
            self.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )

    def encode(self, messages: Messages) -> list[int]:
        messages = normalize_messages(messages)
        if self.formatter is None:
            text = "\n".join(m["content"] for m in messages if m["content"])
            return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        try:
            rendered = self.formatter(messages=messages)
        except Exception as e:  # jinja errors from the template itself (e.g. "roles must alternate")
            raise UserError(f"the model's chat template refused this conversation: {e}") from None
        return self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )

    def decode(self, ids) -> str:
        """Ids back to text, specials as their text (reply_ids.py checks what a splice replaces)."""
        return self.llm.detokenize(list(ids), special=True).decode("utf-8", errors="replace")
