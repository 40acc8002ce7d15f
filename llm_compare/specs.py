"""What a model is, before it is loaded: `ModelSpec`, and the registry file users edit.

A spec names where the weights are (`source`), which backend serves them, at which precision,
and how a conversation becomes a prompt. The registry (`assets/models.toml` by default) maps
short names to specs; the CLI and UI accept either a registry name or a path / URL, and flags
override single fields.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from llm_compare.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_REGISTRY = ASSETS / "models.toml"

BACKENDS = ("transformers", "llamacpp", "openai")
# gguf-*: the model directory exported once to that GGUF type and run by llama.cpp (loading/gguf/export.py)
GGUF_DTYPES = ("gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m")
DTYPES = ("float32", "bfloat16", "float16", "int8", *GGUF_DTYPES)
# llama.cpp's KV cache for each exported type: float32 keeps gguf-f32 exact; the others keep f16, as
# llama.cpp does by default: a q8_0 cache (half the memory) needs flash attention, which evaluated a
# prompt 2x slower at a 1000-token context on a 2-core EPYC (docs/conversations.md, bench/conversation.py --kv-types)
GGUF_KV_CACHE = {"gguf-f32": "f32", "gguf-f16": "f16", "gguf-q8_0": "f16", "gguf-q4_k_m": "f16"}
# the one context budget: tokens of conversation llama.cpp allocates KV cache for at load unless a model's
# `context` says otherwise (Ollama's long-time default; lets both seed models fit 10 GiB, docs/memory.md),
# and the KV cache the transformers estimate budgets for (a long conversation)
CONTEXT_TOKENS = 2048
MIN_CONTEXT = 256
AUTO_DTYPE = "auto"  # nobody chose: the path measured fastest on this machine that fits (dtype_choice)
CHAT_FORMATS = ("auto", "template", "raw", "chatglm3", "qwen")


def is_gguf_dtype(dtype: str | None) -> bool:
    """A gguf-* dtype: the model directory exported to that GGUF type and run by llama.cpp."""
    return dtype in GGUF_DTYPES


# -- sane ranges: every number a user or a file gives is checked here, and the error names the range --
THREADS_PER_CORE = 4  # beyond this, threads only queue for the cores (a million of them crash the process)
MAX_CONTEXT = 2**31 - 1  # llama.cpp's context is a 32-bit int; what a model reserves is capped at its trained context
MAX_NEW_TOKENS = 32768  # a reply longer than any model's usual context; the context bounds it anyway
BOOTSTRAP_ROUNDS = (100, 100_000)  # rating intervals: fewer are noise, more only take longer
# sizes and counts from a config.json or a GGUF header: the largest published models are 10-100x below these
# bounds, so a value outside is a broken or forged file, never a model (and would size memory absurdly)
SHAPE_RANGES = {
    "num_hidden_layers": (1, 1024),
    "hidden_size": (1, 1 << 20),
    "intermediate_size": (1, 1 << 22),
    "num_attention_heads": (1, 1 << 14),
    "num_key_value_heads": (1, 1 << 14),
    "head_dim": (1, 1 << 14),
    "vocab_size": (1, 1 << 24),
    "max_position_embeddings": (1, MAX_CONTEXT),
}
MAX_TEXT_BYTES = 1 << 23  # a prompt, registry, preset or auth file: 8 MiB, far past any model's context
MAX_CONFIG_BYTES = 1 << 24  # a config.json (real ones are a few KiB)
MAX_UPLOAD_BYTES = 1 << 20  # the app takes no files: Gradio's upload route refuses more than this
SHAPE_ALIASES = {"num_layers": "num_hidden_layers", "ffn_hidden_size": "intermediate_size", "seq_length":
                 "max_position_embeddings", "padded_vocab_size": "vocab_size", "multi_query_group_num":
                 "num_key_value_heads", "kv_channels": "head_dim"}  # ChatGLM3 / Qwen-1 config.json names
GGUF_LIMITS = {  # a GGUF header's own counts (the largest real vocabularies hold ≈ 260k tokens)
    "metadata keys": 1 << 16, "tensors": 1 << 20, "array items": 1 << 24, "string bytes": 1 << 26,
    "array nesting": 4,  # llama.cpp itself reads no nested arrays
}


def in_range(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def check_range(value, low: int, high: int, what: str, why: str = "", fix: str = "") -> int:
    """`value` when it is a whole number in [low, high]; else one line naming the range (`why`: where the
    bound comes from, `fix`: what to do instead)."""
    if not in_range(value, low, high):
        raise UserError(f"{what} must be a whole number from {low:,} to {high:,}{why} (got {value!r}){fix}")
    return value


def max_threads() -> int:
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(value, what: str) -> None:
    """CPU threads for a model: None (the thread policy decides) or 1 to THREADS_PER_CORE x the cores."""
    if value is not None:
        check_range(value, 1, max_threads(), what, f" ({THREADS_PER_CORE} x this machine's {os.cpu_count() or 1} cores)",
                    "; leave it out for the thread policy")


def check_url(url: str, what: str) -> None:
    """An http(s) URL with a host (and a port, when given, that is a number): `http://[::1` is refused."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"{what} {url!r} is not a valid http(s) base URL; write it as http://HOST:PORT/v1")


def reserved_context(asked: int | None, trained: int | None) -> int:
    """Tokens of KV cache llama.cpp reserves for a model: its `context` (default CONTEXT_TOKENS),
    never more than it was trained for (memory it could never use)."""
    want = asked or CONTEXT_TOKENS
    return min(want, trained) if trained else want


def check_context(value, what: str) -> None:
    """llama.cpp context for a model: None (CONTEXT_TOKENS) or MIN_CONTEXT to MAX_CONTEXT tokens
    (what it reserves is then capped at what the model was trained for: `reserved_context`)."""
    if value is not None:
        check_range(value, MIN_CONTEXT, MAX_CONTEXT, f"{what} (tokens)", fix=f"; leave it out for {CONTEXT_TOKENS}")


def check_max_new_tokens(value) -> None:
    check_range(value, 1, MAX_NEW_TOKENS, "max new tokens")


def check_rounds(value, what: str = "bootstrap rounds") -> int:
    return check_range(value, *BOOTSTRAP_ROUNDS, what)


def shape_problems(config: dict, where: str = "config.json") -> dict[str, str]:
    """{key: "invalid in config.json: ..."} for each size or count in `config` (native names, or the seed
    formats' SHAPE_ALIASES) out of SHAPE_RANGES."""
    out = {}
    for key, value in config.items():
        low, high = SHAPE_RANGES.get(SHAPE_ALIASES.get(key, key), (None, None))
        if low is not None and value is not None and not in_range(value, low, high):
            out[key] = f"invalid in {where}: {key} = {value!r} (a model has {low:,} to {high:,})"
    heads, kv = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if not out and in_range(heads, 1, 1 << 14) and in_range(kv, 1, 1 << 14) and heads % kv:
        out["num_key_value_heads"] = (f"invalid in {where}: num_key_value_heads = {kv} does not divide "
                                      f"num_attention_heads = {heads}")
    return out


def check_shape(config: dict, where: str = "config.json") -> None:
    """UserError naming the first size or count out of range (loading and the memory estimate)."""
    problems = shape_problems(config, where)
    if problems:
        raise UserError(f"{next(iter(problems.values()))}; the file is broken: download it again")


@dataclass(frozen=True)
class ModelSpec:
    """One model configuration as a deployer would name it (same weights at two dtypes = two specs)."""

    name: str
    source: str  # local dir, .gguf file, "embedded:smollm2", hub id, or base URL (openai)
    label: str = ""
    backend: str = "transformers"
    dtype: str = AUTO_DTYPE
    chat_format: str = "auto"
    generation: dict = field(default_factory=dict)  # per-model defaults (GenerationParams fields)
    trust_remote_code: bool = False
    threads: int | None = None  # None: the engine's thread policy decides
    context: int | None = None  # llama.cpp: tokens its KV cache holds, allocated at load (None: CONTEXT_TOKENS)
    remote_model: str | None = None  # openai backend: the server's model name
    api_key_env: str | None = None  # openai backend: env var holding the API key
    timeout_s: float = 60.0  # openai backend: connect/read timeout
    notes: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if self.backend not in BACKENDS:
            raise UserError(
                f"model {self.name!r}: unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}"
            )
        if self.backend == "openai":
            check_url(self.source, f"model {self.name!r}: source")
        check_threads(self.threads, f"model {self.name!r}: threads")
        check_context(self.context, f"model {self.name!r}: context")
        if self.dtype not in DTYPES + (AUTO_DTYPE,):
            raise UserError(f"model {self.name!r}: unknown dtype {self.dtype!r}; use one of "
                            f"{', '.join(DTYPES + (AUTO_DTYPE,))}")
        if self.chat_format not in CHAT_FORMATS:
            raise UserError(
                f"model {self.name!r}: unknown chat_format {self.chat_format!r}; "
                f"use one of {', '.join(CHAT_FORMATS)}"
            )

    def with_overrides(self, **changes) -> "ModelSpec":
        """A copy with the non-None fields of `changes` applied (CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Registry:
    models: dict[str, ModelSpec]
    default_pair: tuple[str, str]
    path: Path | None = None

    def names(self) -> list[str]:
        return list(self.models)

    def resolve(self, name_or_source: str | None, side: str = "a") -> ModelSpec:
        """A registry name, or a path/URL turned into an ad-hoc spec; None means the default for `side`."""
        if not name_or_source:
            name_or_source = self.default_pair[0 if side == "a" else 1]
        if name_or_source in self.models:
            return self.models[name_or_source]
        return spec_from_source(name_or_source)


def spec_from_source(source: str) -> ModelSpec:
    """An ad-hoc spec for a path, GGUF file, hub id or http(s) URL given on the command line."""
    if source.startswith(("http://", "https://")):
        return ModelSpec(name=source, source=source, backend="openai")
    path = Path(source).expanduser()
    looks_like_path = path.exists() or source.startswith((".", "/", "~")) or source.endswith(".gguf")
    if looks_like_path:
        return ModelSpec(name=path.name or source, source=str(path), label=path.name or source)
    if source.count("/") == 1:  # org/name: a hub id
        return ModelSpec(name=source, source=source)
    raise UserError(
        f"unknown model {source!r}: not a registry name and not an existing path; "
        "run `python -m llm_compare models` to list names, or pass a model directory or .gguf file"
    )


def read_capped(source, limit: int, what: str, fix: str) -> bytes:
    """At most `limit` bytes of a path or binary stream (`what` names it); more is refused with one line
    instead of reading until memory runs out (`--prompt-file /dev/zero`)."""
    try:
        if hasattr(source, "read"):
            data = source.read(limit + 1)
        else:
            with open(Path(source).expanduser(), "rb") as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{what} does not exist; {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror or e}; {fix}") from None
    if len(data) > limit:
        raise UserError(f"{what} holds more than {limit // 2**20} MiB, more than any model reads; {fix}")
    return data


def read_toml(path: Path, what: str, fix: str) -> dict:
    """A user-edited TOML file (`what`: "registry file", "preset file"); `fix` says what to pass instead."""
    data = read_capped(path, MAX_TEXT_BYTES, f"{what} {path}", fix)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{what} {path} is not valid TOML: {e}") from None


def load_registry(path: str | Path | None = None) -> Registry:
    """Read a registry TOML file; every problem is a UserError naming the file and entry."""
    path = Path(path) if path else DEFAULT_REGISTRY
    data = read_toml(path, "registry file", "pass --registry with an existing TOML file")
    entries = data.get("models")
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"registry file {path} has no [models.NAME] tables; see assets/models.toml for the layout")
    known = {f.name for f in dataclasses.fields(ModelSpec)} - {"name"}
    models = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise UserError(f"registry file {path}: models.{name} must be a table")
        unknown = set(entry) - known
        if unknown:
            raise UserError(
                f"registry file {path}: models.{name} has unknown field(s) {', '.join(sorted(unknown))}; "
                f"known fields: {', '.join(sorted(known))}"
            )
        if "source" not in entry:
            raise UserError(f"registry file {path}: models.{name} needs a `source` (path, .gguf file or URL)")
        models[name] = ModelSpec(name=name, **entry)
    pair = data.get("default_pair") or list(models)[:2]
    if len(pair) == 1:
        pair = [pair[0], pair[0]]
    for name in pair:
        if name not in models:
            raise UserError(f"registry file {path}: default_pair names {name!r}, which is not in [models]")
    return Registry(models=models, default_pair=(pair[0], pair[1]), path=path)
