"""What the two rebuilt legacy tokenizers (ChatGLM3, Qwen-1) share: the slice of transformers'
tokenizer API that generation, the streamer and the chat formats call."""

from __future__ import annotations


def id_list(ids) -> list[int]:
    """Token ids as a flat list of ints (accepts lists, tuples, tensors, numpy arrays, one int)."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    if ids and isinstance(ids[0], (list, tuple)):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


class LegacyTokenizer:
    """Subclasses give `vocab_size`, `name_or_path`, `encode(text, add_special_tokens)` and `decode`."""

    chat_template = None  # the chat prompt is the checkpoint's own format class's job
    padding_side = "left"

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path!r}, vocab_size={self.vocab_size})"

    def __call__(self, text, add_special_tokens: bool = True, return_tensors: str | None = None, **_) -> dict:
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__} takes one string at a time")
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        out = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if return_tensors == "pt":
            import torch

            out = {k: torch.tensor([v], dtype=torch.long) for k, v in out.items()}
        elif return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        return out

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        return [self.decode(s, **kwargs) for s in sequences]
