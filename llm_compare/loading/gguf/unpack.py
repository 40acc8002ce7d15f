"""A llama-family GGUF unpacked natively into a transformers model directory (the one-time conversion).

transformers' own GGUF loading (`from_pretrained(gguf_file=...)`) parses the file with
`gguf.GGUFReader` once for the tokenizer, the config and the weights, and maps every tensor name
through gguf's name tables: ≈30 s for the embedded 135M model on 2 cores, of which de-quantizing is
≈2.5 s. Here the header is read once (`loading/gguf/header.py`), tensors are de-quantized with
`gguf.quants.dequantize` (the function transformers calls, so the floats are the same bits), q/k rows
are put back from llama.cpp's adjacent-pair rope order exactly as transformers does, and the config and
the byte-level BPE tokenizer are built from the metadata.

Covered: `general.architecture` = "llama" with a "gpt2" (byte-level BPE) vocabulary split by GPT-2's
rule, no rope scaling and only the plain llama tensors. `not_covered` names what is not, and
`cache.py` hands such a file to transformers' own conversion (slower, and it says so).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from llm_compare.families.gguf_metadata import native_config, rotary_dims
from llm_compare.families.tensors import LAYER_NAMES, TOP_NAMES, rename
from llm_compare.loading.gguf.header import GgufHeader, GgufTensor
from llm_compare.loading.gguf.vocab import byte_to_unicode
from llm_compare.loading.size_model import GGML_TYPES
from llm_compare.specs import check_shape

VOCAB_KEYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"})
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
# pre-tokenizer names whose split is GPT-2's own (transformers gives other names their own regex)
GPT2_SPLIT_PRE = {None, "default", "gpt2", "smollm"}
LLAMA_FIELDS = ("max_position_embeddings", "num_hidden_layers", "intermediate_size", "hidden_size", "head_dim",
                "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "vocab_size")  # LlamaConfig's, from the header
SPECIAL_IDS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "pad": "padding_token_id"}
_LAYER = re.compile(r"blk\.(\d+)\.(.+)")
_NATIVE_TOP = {gguf: native for native, gguf in TOP_NAMES.items()}
_NATIVE_LAYER = {gguf: native for native, gguf in LAYER_NAMES.items()  # the plain llama block's weights
                 if "gate_up" not in native and "bias" not in gguf and not gguf.startswith(("attn_q_norm", "attn_k_norm"))}
# floats, legacy and k-quants: gguf.quants dequantizes them
_GGML_TYPES = {GGML_TYPES[n].id for n in ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k",
                                           "q4_k", "q5_k", "q6_k")}


def native_name(gguf_name: str) -> str | None:
    """transformers' name for a llama GGUF tensor (the inverse of the exporter's table)."""
    return rename(gguf_name, _NATIVE_TOP, _LAYER, _NATIVE_LAYER, "model.layers.{}.{}")


def not_covered(header: GgufHeader) -> str | None:
    """Why this file needs transformers' own conversion, or None when the native one covers it."""
    meta = header.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        return f"architecture {arch!r} (the fast conversion covers llama)"
    if "mistral" in str(meta.get("general.name", "")).lower():
        return "a Mistral model (transformers maps it to its own class)"
    if meta.get("tokenizer.ggml.model") != "gpt2":
        return f"tokenizer {meta.get('tokenizer.ggml.model')!r} (the fast conversion covers byte-level BPE)"
    if meta.get("tokenizer.ggml.pre") not in GPT2_SPLIT_PRE:
        return f"pre-tokenizer {meta.get('tokenizer.ggml.pre')!r}"
    if not {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"} <= set(meta):  # token types may be absent
        return "no tokens or merges in its metadata"
    if any(key.startswith("llama.rope.scaling") for key in meta):
        return "rope scaling"
    head_dim = native_config(meta.get)[1].get("head_dim")
    if rotary_dims(meta.get) not in (None, head_dim):
        return f"rope on {rotary_dims(meta.get)} of each head's {head_dim} dimensions"
    for t in header.tensors:
        if native_name(t.name) is None:
            return f"tensor {t.name}"
        if t.ggml_type not in _GGML_TYPES:
            return f"tensor type {t.ggml_type} of {t.name}"
    if any(len(m.split(" ")) != 2 for m in meta["tokenizer.ggml.merges"]):
        return "a merge that is not two tokens"
    return None


def llama_config(header: GgufHeader):
    """The LlamaConfig transformers builds from the same metadata (same values: transformers takes head_dim
    from rope.dimension_count, which `not_covered` requires to be the head width llama.cpp uses)."""
    from transformers import LlamaConfig

    meta = header.metadata
    stated = native_config(meta.get)[1]
    fields = {name: stated[name] for name in LLAMA_FIELDS if name in stated}
    fields.setdefault("vocab_size", len(meta["tokenizer.ggml.tokens"]))
    check_shape(fields, "the GGUF header")  # a forged size would size the model it builds
    if "llama.rope.freq_base" in meta:
        fields["rope_parameters"] = {"rope_type": "default", "rope_theta": meta["llama.rope.freq_base"]}
    for kind, key in SPECIAL_IDS.items():
        if f"tokenizer.ggml.{key}" in meta:
            fields[f"{kind}_token_id"] = meta[f"tokenizer.ggml.{key}"]
    fields["tie_word_embeddings"] = all(t.name != "output.weight" for t in header.tensors)
    return LlamaConfig(**fields)


def unrope(rows: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows from llama.cpp's adjacent-pair rope order back to rotate-half (transformers')."""
    pair = rows.shape[0] // heads // 2
    return rows.reshape(heads, pair, 2, *rows.shape[1:]).swapaxes(2, 1).reshape(rows.shape)


def dense_tensor(blob: np.ndarray, header: GgufHeader, t: GgufTensor, config) -> torch.Tensor:
    """One tensor as float32, in transformers' layout."""
    from gguf.quants import dequantize

    rows = 1
    for d in t.dims[1:]:
        rows *= d
    start = header.data_start + t.offset
    raw = blob[start:start + t.nbytes()].reshape(rows, -1)
    values = dequantize(raw, t.ggml_type).reshape(*reversed(t.dims))
    if ".attn_q." in t.name:
        values = unrope(values, config.num_attention_heads)
    elif ".attn_k." in t.name:
        values = unrope(values, config.num_key_value_heads)
    values = np.ascontiguousarray(values, dtype=np.float32)
    return torch.from_numpy(values if values.flags.writeable else values.copy())  # float tensors: views of the file


def dense_state_dict(path: Path, header: GgufHeader, config) -> dict[str, torch.Tensor]:
    """Every tensor de-quantized; two threads (numpy lets go of the GIL in the big array operations)."""
    blob = np.memmap(path, mode="r", dtype=np.uint8)
    with ThreadPoolExecutor(2) as pool:
        tensors = pool.map(lambda t: dense_tensor(blob, header, t, config), header.tensors)
        return {native_name(t.name): tensor for t, tensor in zip(header.tensors, tensors)}


def byte_level_tokenizer(header: GgufHeader):
    """The byte-level BPE tokenizer the metadata describes, as transformers builds it from a GGUF:
    GPT-2's split and byte alphabet, control tokens special, user-defined tokens added whole."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    meta = header.metadata
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or []
    spelling = byte_to_unicode()
    alphabet = set(spelling.values())
    vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i
             for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # on the backend, as transformers' GGUF path does (so they are special tokens, not "extra" ones)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, kind in zip(tokens, types) if kind == CONTROL and set(t) <= alphabet])
    known = backend.get_vocab()
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, kind in zip(tokens, types) if kind == USER_DEFINED and t in known])
    named = {f"{kind}_token": tokens[meta[f"tokenizer.ggml.{key}"]] for kind, key in SPECIAL_IDS.items()
             if isinstance(meta.get(f"tokenizer.ggml.{key}"), int) and meta[f"tokenizer.ggml.{key}"] < len(tokens)}
    flags = {f"add_{kind}_token": bool(meta[f"tokenizer.ggml.add_{kind}_token"]) for kind in ("bos", "eos")
             if f"tokenizer.ggml.add_{kind}_token" in meta}  # only the ones the file states, as transformers does
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **flags, **named)
    if isinstance(meta.get("tokenizer.chat_template"), str):
        tokenizer.chat_template = meta["tokenizer.chat_template"]
    return tokenizer


def write_model_directory(path: Path, header: GgufHeader, target: Path, say=lambda text: None) -> None:
    """config.json, generation_config.json, model.safetensors (float32) and the tokenizer files."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    config = llama_config(header)
    say("building its tokenizer")
    tokenizer = byte_level_tokenizer(header)
    say("de-quantizing its weights")
    state = dense_state_dict(path, header, config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    target.mkdir(parents=True, exist_ok=True)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    config.save_pretrained(target)
    GenerationConfig.from_model_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    say(f"saving the dense weights to {target.parent}")
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
