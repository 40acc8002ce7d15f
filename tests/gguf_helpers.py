"""Helpers shared by the GGUF export tests: llama.cpp logits of an exported file, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from conftest import LEGACY_FIXTURES, build_tiny_chat_model

GLM, QWEN = LEGACY_FIXTURES / "chatglm3-6b-tiny", LEGACY_FIXTURES / "qwen-7b-chat-tiny"


def gguf_logits(path: Path, ids: list[int], positions: list[int], **context) -> torch.Tensor:
    """llama.cpp's logits of `ids` at `positions` (float32 KV cache unless `context` says otherwise)."""
    import llama_cpp

    options = {"type_k": 0, "type_v": 0, "flash_attn": False} | context
    llm = llama_cpp.Llama(str(path), n_ctx=max(512, len(ids) + 8), logits_all=True, verbose=False,
                          n_threads=1, **options)
    try:
        llm.eval(ids)
        return torch.tensor(np.array(llm.scores[positions]))
    finally:
        llm.close()


def build_wide_model(directory: Path, seed: int = 0) -> Path:
    """A tiny Llama-style chat model whose widths are multiples of 256 (q4_K/q8_0 blocks fit whole),
    with weights scaled so logits span a few units like a trained model's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_chat_model(directory, seed=seed)
    old = json.loads((directory / "config.json").read_text())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=old["vocab_size"], hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=old["eos_token_id"], pad_token_id=old["pad_token_id"], bos_token_id=None)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(directory)
    return directory
