"""What llama.cpp needs to run a model directory: its architecture name, hyperparameters and
tensor names, worked out from the tensors our own loaders produce (no `.py` from the directory runs).

Every source goes through the native transformers names first (its family's converter,
`llm_compare/families/`), then one table (`families/tensors.py`) maps native names to llama.cpp's:

| family | native class | llama.cpp arch | notes |
|---|---|---|---|
| ChatGLM3-6B / GLM | GlmForCausalLM | `chatglm` | fused gate+up `ffn_up` (gate first), rope on half of each head, adjacent pairs (NORM) |
| Qwen-1 / Qwen2 | Qwen2ForCausalLM | `qwen2` | q/k/v biases, rope on rotate-half pairs (NEOX): no permutation |
| Llama-style | LlamaForCausalLM | `llama` | llama.cpp's rope takes adjacent pairs: q/k rows are permuted |

(Learned from llama.cpp's `src/models/{chatglm,qwen2,llama}.cpp` and its converter.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from llm_compare.errors import UserError
from llm_compare.families import Family, family_of
from llm_compare.families.tensors import gguf_name, head_dim
from llm_compare.loading.checkpoint import Shards, find_shards, read_shard
from llm_compare.loading.source import Source

COVERED = "ChatGLM3-6B and Qwen-1 checkpoints, and native llama, qwen2 and glm directories"

UNSTATED_CONTEXT = 4096  # written when config.json states no trained context


@dataclass
class ExportPlan:
    """One source directory, ready to be written as GGUF."""

    arch: str  # llama.cpp architecture name
    config: object  # the native transformers config
    directory: Path
    shards: Shards
    convert: Callable  # (source name, tensor) -> [(native name, tensor)], [] to drop, None unknown
    family: Family  # its description: tokenizer, names in messages

    @property
    def files(self) -> list[Path]:
        """Every file whose change must invalidate an export (weights, config, tokenizer)."""
        names = ("config.json", "tokenizer.model", "qwen.tiktoken", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json")
        extra = [self.directory / n for n in names if (self.directory / n).is_file()]
        index = [self.shards.index] if self.shards.index else []
        return sorted({*self.shards.files, *index, *extra})


def export_config(source: Source):
    """The native transformers config an export of `source` is written from (no weights read), or a
    one-line refusal naming what is covered. A source without a path stands for its config dict alone."""
    where = source.path / "config.json" if source.path else Path("config.json")
    if source.kind == "gguf":
        raise UserError(f"{source.path.name} is already a GGUF file; use backend \"llamacpp\" for it, not a gguf-* dtype")
    if source.kind == "hub":
        raise UserError(f"{source.hub_id} is a hub id; gguf-* dtypes need a local model directory")
    family = family_of(source)
    if family.llamacpp_arch(source.config) is None:
        raise UserError(
            f"the GGUF exporter does not cover model_type {source.config.get('model_type')!r} ({where}); "
            f"it covers {COVERED}; use dtype float32, bfloat16, float16 or int8 for this model"
        )
    return family.native_config(source.config, where)


def export_context(config) -> int:
    """The context an export states (`{arch}.context_length`): what llama.cpp caps its KV cache at."""
    return config.max_position_embeddings or UNSTATED_CONTEXT


def exported_context(source: Source) -> int | None:
    """The trained context an export of `source` would state, None when it cannot be exported."""
    try:
        return export_context(export_config(source))
    except UserError:
        return None


def plan_export(source: Source) -> ExportPlan:
    """The plan for a resolved source, or a one-line refusal naming what is covered."""
    config = export_config(source)
    family = family_of(source)
    return ExportPlan(family.llamacpp_arch(source.config), config, source.path, find_shards(source.path),
                      family.converter(config), family)


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def rotary_dims(config) -> int:
    params = getattr(config, "rope_parameters", None) or {}
    factor = params.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
    return int(head_dim(config) * factor)


def check_supported(plan: ExportPlan) -> None:
    """Refuse configs llama.cpp's graph for the arch would compute differently."""
    config = plan.config
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise UserError(f"{plan.directory}: rope scaling {params.get('rope_type')!r} is not covered by the GGUF "
                        "exporter; use dtype float32, bfloat16, float16 or int8 for this model")
    if plan.arch in ("chatglm", "qwen2") and head_dim(config) * config.num_attention_heads != config.hidden_size:
        raise UserError(f"{plan.directory}: heads x head_dim != hidden_size, which llama.cpp's {plan.arch} "
                        "graph does not support; use a non-gguf dtype")


def write_hparams(writer, plan: ExportPlan, context: int) -> None:
    """The `<arch>.*` keys llama.cpp reads for these architectures."""
    c = plan.config
    writer.add_context_length(int(context))
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads or c.num_attention_heads)
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_rope_freq_base(rope_theta(c))
    writer.add_rope_dimension_count(rotary_dims(c))
    if head_dim(c) * c.num_attention_heads != c.hidden_size:
        writer.add_key_length(head_dim(c))
        writer.add_value_length(head_dim(c))


def llama_rope_order(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """q/k rows from rotate-half order (transformers) to adjacent pairs (llama.cpp's llama graph)."""
    rows = tensor.shape[0]
    shaped = tensor.reshape(heads, 2, rows // heads // 2, *tensor.shape[1:])
    return shaped.transpose(1, 2).reshape(tensor.shape)


@dataclass
class Entry:
    """One GGUF tensor: its name, the source view, and a transform applied only when written."""

    name: str
    tensor: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def data(self) -> torch.Tensor:
        return self.transform(self.tensor) if self.transform else self.tensor


def entries(plan: ExportPlan) -> Iterator[Entry]:
    """The model's tensors under llama.cpp's names, shard by shard, in a fixed order."""
    c = plan.config
    for path in plan.shards.files:
        for source_name, tensor in read_shard(path, plan.shards.format):
            parts = plan.convert(source_name, tensor)
            if parts is None:
                raise UserError(f"shard {path} has tensor {source_name}, which a plain {plan.family.what} checkpoint does "
                                "not have; use the original full-precision checkpoint")
            for native, part in parts:
                name = gguf_name(native)
                if name is None:
                    raise UserError(f"shard {path}: tensor {native} has no llama.cpp {plan.arch} counterpart; "
                                    "use a non-gguf dtype for this model")
                transform = None
                if plan.arch == "llama" and ".attn_q." in name:
                    transform = lambda t, h=c.num_attention_heads: llama_rope_order(t, h)  # noqa: E731
                elif plan.arch == "llama" and ".attn_k." in name:
                    transform = lambda t, h=c.num_key_value_heads: llama_rope_order(t, h)  # noqa: E731
                yield Entry(name, part, transform)
