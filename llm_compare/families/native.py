"""Model directories transformers reads natively (config.json with a model_type it knows): the
config class itself holds the defaults for optional fields, so the mapping is the class's own."""

from __future__ import annotations

import re
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.families.family import Family
from llm_compare.families.tensors import covers
from llm_compare.specs import check_shape

DROPPED = re.compile(r".*rotary_emb\.inv_freq$")  # recomputed by the model: never a weight
# sizes a llama-shaped config must state: the class defaults (a 7B llama's) would describe another model
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def class_config(raw: dict, where: Path):
    """The transformers config class of `model_type` filled from config.json (never remote code): the
    class's own defaults for every field config.json leaves out."""
    from transformers import CONFIG_MAPPING

    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UserError(f"{where}: model_type {model_type!r} is not one transformers knows; "
                        "pass a model directory transformers can read")
    try:
        return CONFIG_MAPPING[model_type].from_dict(raw)
    except Exception as e:  # noqa: BLE001 - the classes check values their own ways (a 0 head count divides)
        raise UserError(f"cannot read {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def native_config(raw: dict, where: Path):
    """`class_config`, refused when a size is out of range or a llama-shaped config leaves out one of
    its sizes (REQUIRED)."""
    check_shape(raw, str(where))
    config = class_config(raw, where)
    aliases = getattr(config, "attribute_map", {})
    absent = [k for k in REQUIRED if raw.get(k) is None and raw.get(aliases.get(k, k)) is None]
    if covers(raw.get("model_type")) and absent:
        raise UserError(f"{where} has no {' / '.join(absent)}; re-download the model's config.json")
    return config


def converter(config):
    """Stored names are already native: keep each tensor, drop recomputed rotary buffers."""

    def convert(name, tensor):
        return [] if DROPPED.fullmatch(name) else [(name, tensor)]

    return convert


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def generation(path: Path) -> None:
    """None: the directory's own generation_config.json, read by transformers."""
    return None


def context_length(config) -> int | None:
    """The trained context a native config states (the classes spell it four ways)."""
    for attr in ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


FAMILY = Family(
    loader="transformers model directory",
    kind="hf_dir", title="transformers", what="transformers", native_type=None, native_class=None,
    native_config=native_config, converter=converter, load_tokenizer=load_tokenizer, chat_format=None,
    generation=generation, vocab="hf", renamed=False,
)
