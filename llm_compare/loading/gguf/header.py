"""GGUF headers (metadata and tensor table, no tensor data), checked against the file size.

`check_gguf` is the one check loading and `doctor` share: a file cut short (an interrupted copy or
download) fails here with one line, before transformers or llama.cpp read it and fail with a
`struct.error` or a crash. The header lists every tensor's type, shape and offset, so the bytes the
tensor data needs are known: a file shorter than that is refused.

The metadata comes along as plain Python values; arrays (the vocabulary, the merges, token types)
only when asked for by key, so the check stays cheap. One pass of `struct` reads: ≈0.2 s for a
49k-token vocabulary, where `gguf.GGUFReader` builds a numpy view per value (≈4 s).
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llm_compare.errors import UserError
from llm_compare.loading.size_model import GGML_IDS
from llm_compare.specs import GGUF_LIMITS

# metadata value type → struct format (uint8 int8 uint16 int16 uint32 int32 float32 bool uint64 int64 float64)
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
SCALAR_BYTES = {kind: struct.calcsize("<" + fmt) for kind, fmt in SCALAR_FORMATS.items()}
STRING, ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32
SMALL_ARRAY = 1024  # numeric arrays up to this long are read with the header (per-layer values)
MAX_DIMS = 4  # ggml tensors have at most four


@dataclass(frozen=True)
class GgufTensor:
    name: str
    dims: tuple[int, ...]  # innermost first, as GGUF stores them
    ggml_type: int
    offset: int  # from the start of the data section

    def nbytes(self) -> int | None:
        """Bytes of its data, or None for a type the size model does not know."""
        kind = GGML_IDS.get(self.ggml_type)
        return kind.bytes_for(math.prod(self.dims)) if kind else None


@dataclass(frozen=True)
class GgufHeader:
    version: int
    tensors: tuple[GgufTensor, ...]
    data_start: int  # file offset of the (aligned) tensor data section
    metadata: dict = field(default_factory=dict)  # numbers and strings; arrays (the vocabulary) only when asked for

    def data_end(self) -> int:
        """The file size the tensors need (unknown tensor types count up to their offset)."""
        ends = [t.offset + (t.nbytes() or 0) for t in self.tensors]
        return self.data_start + max(ends, default=0)


class _Reader:
    """Little-endian reads that raise EOFError at the end of the file instead of returning short."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def take(self, n: int) -> bytes:
        if self.f.tell() + n > self.size:  # never allocate a length read from a broken file
            raise EOFError
        return self.f.read(n)

    def num(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def skip(self, n: int) -> None:
        if self.f.tell() + n > self.size:
            raise EOFError
        self.f.seek(n, 1)

    def count(self, what: str) -> int:
        """A length or count from the header, refused past its GGUF_LIMITS bound (a forged file)."""
        n = self.num("Q")
        if n > GGUF_LIMITS[what]:
            raise ValueError(f"{n:,} {what} at byte {self.f.tell() - 8}, more than any model has "
                             f"(at most {GGUF_LIMITS[what]:,})")
        return n

    def string(self) -> bytes:
        return self.take(self.count("string bytes"))

    def array_head(self, depth: int) -> tuple[int, int]:
        """(item type, count) of an array nested `depth` deep (1: a metadata value)."""
        if depth > GGUF_LIMITS["array nesting"]:
            raise ValueError(f"arrays nested more than {GGUF_LIMITS['array nesting']} deep")
        return self.num("I"), self.count("array items")

    def value(self, kind: int, array: bool = False, depth: int = 0):
        """A number or string value; an array when `array`, or when it holds at most SMALL_ARRAY
        numbers (per-layer values such as head counts); other arrays (the vocabulary) are skipped: None.
        `depth`: arrays around this value (nesting is bounded, so a forged file cannot exhaust the stack)."""
        if kind in SCALAR_FORMATS:
            return self.num(SCALAR_FORMATS[kind])
        if kind == STRING:
            return self.string().decode("utf-8", "replace")
        if kind != ARRAY:
            self.skip_value(kind, depth)
            return None
        item, count = self.array_head(depth + 1)
        if item in SCALAR_FORMATS and (array or count <= SMALL_ARRAY):
            return list(struct.unpack(f"<{count}{SCALAR_FORMATS[item]}", self.take(count * SCALAR_BYTES[item])))
        if array:
            return [self.value(item, depth=depth + 1) for _ in range(count)]
        self.skip_items(item, count, depth + 1)
        return None

    def skip_value(self, kind: int, depth: int = 0) -> None:
        if kind in SCALAR_BYTES:
            self.skip(SCALAR_BYTES[kind])
        elif kind == STRING:
            self.skip(self.count("string bytes"))
        elif kind == ARRAY:
            self.skip_items(*self.array_head(depth + 1), depth + 1)
        else:
            raise ValueError(f"unknown metadata value type {kind}")

    def skip_items(self, item: int, count: int, depth: int) -> None:
        if item in SCALAR_BYTES:
            self.skip(SCALAR_BYTES[item] * count)
        else:
            for _ in range(count):
                self.skip_value(item, depth)


def read_header(path: Path, arrays: frozenset[str] = frozenset()) -> GgufHeader:
    """Parse the header; EOFError when the file ends inside it, ValueError when it is not GGUF.
    Arrays are read for the keys in `arrays` only."""
    with open(path, "rb") as f:
        r = _Reader(f, Path(path).stat().st_size)
        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic at the start")
        version = r.num("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = r.count("tensors"), r.count("metadata keys")
        metadata = {}
        for _ in range(n_kv):
            key, kind = r.string().decode("utf-8", "replace"), r.num("I")
            value = r.value(kind, key in arrays)
            if value is not None:
                metadata[key] = value
        alignment = metadata.get("general.alignment")
        alignment = alignment if isinstance(alignment, int) and alignment > 0 else DEFAULT_ALIGNMENT
        tensors = []
        for _ in range(n_tensors):
            name, n_dims = r.string().decode("utf-8"), r.num("I")
            if n_dims > MAX_DIMS:
                raise ValueError(f"tensor {name[:40]!r} has {n_dims} dimensions")
            dims = tuple(r.num("Q") for _ in range(n_dims))
            tensors.append(GgufTensor(name, dims, r.num("I"), r.num("Q")))
        start = -(-f.tell() // alignment) * alignment
        return GgufHeader(version, tuple(tensors), start, metadata)


def trained_context(path: Path) -> int | None:
    """The context the file says its model was trained for (`{arch}.context_length`), if it says."""
    meta = check_gguf(path).metadata
    value = meta.get(f"{meta.get('general.architecture')}.context_length")
    return value if isinstance(value, int) and value > 0 else None


def check_gguf(path: Path, arrays: frozenset[str] = frozenset()) -> GgufHeader:
    """The header of a complete GGUF file; a UserError naming the problem for a cut or foreign file.
    `arrays`: the metadata arrays to read too (e.g. the vocabulary)."""
    path = Path(path)
    st = path.stat()
    return _checked(path, st.st_size, st.st_mtime_ns, frozenset(arrays))


@functools.lru_cache(maxsize=32)
def _checked(path: Path, size: int, mtime_ns: int, arrays: frozenset[str]) -> GgufHeader:
    """Cached per size and mtime: a changed file is re-read."""
    redo = "download or copy it again"
    try:
        header = read_header(path, arrays)
    except EOFError:
        raise UserError(
            f"{path.name} ends inside its GGUF header ({size} bytes): the file was cut short; {redo}"
        ) from None
    except (ValueError, OverflowError, UnicodeDecodeError) as e:
        raise UserError(f"{path.name} is not a readable GGUF file ({e}); {redo}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; check the file and its permissions") from None
    need = header.data_end()
    if need > size:
        raise UserError(f"{path.name} is cut short: its tensors need {need} bytes but the file has {size}; {redo}")
    return header
