"""llama.cpp serving a model exported from a directory (dtype gguf-*): our tokenizer at both ends.

llama.cpp only computes logits here. The prompt ids come from the project's chat format for the
directory (ChatGLM3 roles, Qwen-1 ChatML, the tokenizer's template), the next token is picked
from llama.cpp's logits by the same repetition penalty and sampler as the transformers path, a
reply ends on the same stop ids (the stop token is counted, as transformers counts it), and text
is decoded by the same tokenizer. So prompt ids, reply text and token counts mean the same on
both backends, and `drops_last_token` (the seed formats' chat()) works unchanged in the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llm_compare import drafts
from llm_compare.backends import detokenize
from llm_compare.backends.base import TUNABLE
from llm_compare.backends.drafting import LlamaForward
from llm_compare.chat_formats import choose_format
from llm_compare.families import family_of
from llm_compare.families.native import context_length
from llm_compare.params import GenerationParams
from llm_compare.loading.size_model import GGML_TYPES, kv_cache_type
from llm_compare.threads import use_torch_threads


@dataclass
class TextSide:
    """Everything about a model except its weights: what the exported backend needs from the directory."""

    tokenizer: object
    chat_format: object
    context_length: int | None
    generation: dict = field(default_factory=dict)  # the checkpoint's recommended sampling settings


def configured_generation(config) -> dict:
    """The TUNABLE values a transformers GenerationConfig holds (what TransformersBackend recommends)."""
    return {k: getattr(config, k) for k in TUNABLE if getattr(config, k, None) is not None}


def text_side(source, spec) -> TextSide:
    """Tokenizer, chat format, context and generation defaults of a resolved source, no weights read
    (all from its family's description, as the transformers loaders read them)."""
    from transformers import GenerationConfig

    path, family = Path(source.path), family_of(source)
    tok = family.load_tokenizer(path)
    fields = family.generation(path)
    if fields is not None:
        gen = GenerationConfig(**fields)
    else:
        gen = GenerationConfig.from_pretrained(path) if (path / "generation_config.json").is_file() else None
    native = family.chat_format(tok) if family.chat_format else None
    fmt = choose_format(spec.chat_format, tok, gen, native=native)
    context = context_length(family.native_config(source.config, path / "config.json"))
    return TextSide(tok, fmt, context, configured_generation(gen) if gen is not None else {})


def generate_ids(llm, ids: list[int], params: GenerationParams, stop, text: TextSide, emit, length=None,
                 generated: list[int] | None = None) -> None:
    """Evaluate the prompt, then pick and emit tokens until a stop id, max_new_tokens or `stop`, one
    per step or several per step from verified drafts (`drafts.decode`; `length`: a DraftLength, or
    None for none). Emits (text, tokens, first_token_at, drafted) like the plain llama.cpp path;
    `generated` gets the reply's ids."""
    from llm_compare.backends.sampling import NextToken  # reason: torch and transformers

    # torch only picks the token: one thread, so no second OpenMP team spins beside llama.cpp's
    use_torch_threads(1)
    decoder = detokenize.for_tokenizer(text.tokenizer)
    first_at = None

    def put(token: int, drafted: bool) -> None:
        nonlocal first_at
        first_at = first_at or time.perf_counter()
        if generated is not None:
            generated.append(token)
        emit((decoder.feed(token), 1, first_at, int(drafted)))

    if stop.is_set():
        return
    lm = LlamaForward(llm)
    drafts.decode(lm.evaluate, lm.keep, NextToken(params), ids, params.max_new_tokens,
                  set(text.chat_format.stop_token_ids), stop, put, length)
    tail = decoder.flush()
    if tail:
        emit((tail, 0, first_at, 0))


def kv_cache_kwargs(dtype: str, head_dim: int) -> dict:
    """llama.cpp context options for an exported type's KV cache (specs.GGUF_KV_CACHE says which and why).
    Flash attention only where a quantized (q8_0) V cache needs it, which also needs heads whose width
    is a whole number of q8_0 blocks (32 values) — else f16: on a CPU it evaluates long prompts slower."""
    kind = kv_cache_type(dtype, head_dim=head_dim)
    return {"type_k": GGML_TYPES[kind].id, "type_v": GGML_TYPES[kind].id, "flash_attn": kind == "q8_0"}
