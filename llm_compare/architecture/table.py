"""The comparison table: rows of formatted facts, one column per model, as text, Markdown or HTML.

Rows whose values differ between the models are marked (`differs`): the CLI prefixes them with
"≠", Markdown with a ≠ column, HTML with the `diff` class. Every value came from a model's files,
so Markdown and HTML escape all of it.
"""

from __future__ import annotations

import html
import textwrap
from typing import Callable

from llm_compare.machine import cpu_model
from llm_compare.markup import md_cell

MISSING = "unknown"
NOT_APPLICABLE = "–"
MAX_SPECIALS = 12  # special tokens listed by name in the table; the rest counted


def count(n) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B ({n:,})"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M ({n:,})"
    return f"{n:,}"


def size(n) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def yes_no(v) -> str:
    return "yes" if v else "no"


def value(f: dict, key: str, fmt: Callable = str) -> str:
    """A fact formatted, or why it is missing ("not stated" / "unknown")."""
    if "error" in f:
        return MISSING
    v = f.get(key)
    if v is None:
        return (f.get("missing") or {}).get(key, MISSING)
    return fmt(v)


def part(key: str) -> Callable[[dict], str]:
    def show(f: dict) -> str:
        n, total = f.get(key), f.get("params_total")
        if key == "params_output_head" and n == 0 and f.get("tied_embeddings"):
            return "0 (tied to the embeddings)"
        if n is None or not total:
            return value(f, key)
        return f"{count(n)} · {n / total:.1%}"
    return show


def precision(key: str, name: str) -> Callable[[dict], str]:
    def show(f: dict) -> str:
        sizes, ceilings = f.get("weights_bytes") or {}, f.get("decode_ceiling_tokens_per_s") or {}
        if name not in sizes:
            return NOT_APPLICABLE if sizes else value(f, key)
        if key == "weights_bytes":
            return size(sizes[name])
        if name not in ceilings:
            return value(f, key)
        return f"{ceilings[name]:,.0f} tok/s" if ceilings[name] >= 100 else f"{ceilings[name]:.1f} tok/s"
    return show


def norm(f: dict) -> str:
    kind = value(f, "norm_type")
    return kind if f.get("norm_eps") is None else f"{kind}, eps {f['norm_eps']:.0e}"


def tokens_line(counts_key: str, per_char_key: str, per_token_key: str) -> Callable[[dict], str]:
    def show(f: dict) -> str:
        if f.get(per_char_key) is None:
            return value(f, per_char_key)
        counts = f.get(counts_key)
        head = f"{' + '.join(map(str, counts))} tokens · " if counts else ""
        return f"{head}{f[per_char_key]:.2f} tokens/char ({f[per_token_key]:.2f} chars/token)"
    return show


def vocab(f: dict) -> str:
    rows, toks = f.get("vocab_size"), f.get("tokenizer_vocab_size")
    if rows is None or toks is None:
        return f"{value(f, 'vocab_size', count)} embedding rows; tokenizer {value(f, 'tokenizer_vocab_size', count)}"
    return f"{toks:,} tokens in {rows:,} embedding rows ({rows - toks:+,} padding)"


def specials(names: list[str]) -> str:
    shown = " ".join(names[:MAX_SPECIALS])
    return f"{len(names)}: {shown}" + (f" … {len(names) - MAX_SPECIALS} more" if len(names) > MAX_SPECIALS else "")


def first_turn(f: dict) -> str:
    pieces = f.get("first_turn_tokens")
    if not pieces:
        return value(f, "first_turn_tokens")
    shown = " ".join("⟨" + p.replace("\n", "\\n") + "⟩" for p in pieces)
    return f"{len(pieces)} tokens: {shown}"


def bandwidth(f: dict) -> str:
    bw = f.get("memory_bandwidth_bytes_per_s")
    return value(f, "memory_bandwidth_bytes_per_s") if bw is None else f"{bw / 1e9:.1f} GB/s ({cpu_model()})"


SECTIONS: list[tuple[str, list[tuple[str, Callable[[dict], str]]]]] = [
    ("Model", [
        ("family", lambda f: value(f, "family")),
        ("runs as", lambda f: value(f, "runs_as")),
        ("decoder-only", lambda f: value(f, "decoder_only", yes_no)),
    ]),
    ("Parameters (from the config)", [
        ("total", lambda f: value(f, "params_total", count)),
        *[(label, part(f"params_{key}")) for key, label in (
            ("embeddings", "embeddings"), ("attention", "attention"), ("mlp", "MLP"), ("norms", "norms"),
            ("output_head", "output head"))],
    ]),
    ("Shape", [
        ("layers", lambda f: value(f, "layers")),
        ("hidden size", lambda f: value(f, "hidden_size")),
        ("attention heads", lambda f: value(f, "attention_heads")),
        ("KV heads", lambda f: value(f, "kv_heads")),
        ("attention kind", lambda f: value(f, "attention_kind")),
        ("head dimension", lambda f: value(f, "head_dim")),
        ("qkv bias", lambda f: value(f, "qkv_bias", yes_no)),
        ("FFN width", lambda f: value(f, "ffn_size")),
        ("activation", lambda f: value(f, "activation")),
        ("norm", norm),
        ("tied embeddings", lambda f: value(f, "tied_embeddings", yes_no)),
    ]),
    ("Positions", [
        ("RoPE base", lambda f: value(f, "rope_theta", lambda v: f"{v:,.0f}")),
        ("rotated part of each head", lambda f: value(f, "rope_fraction", lambda v: f"{v:.0%}")),
        ("long-context scaling", lambda f: value(f, "rope_scaling")),
        ("configured context", lambda f: value(f, "context_length", lambda v: f"{v:,}")),
        ("trained context", lambda f: value(f, "trained_context_length", lambda v: f"{v:,}")),
    ]),
    ("Vocabulary", [
        ("tokenizer", lambda f: value(f, "tokenizer_kind")),
        ("vocabulary", vocab),
        ("special tokens", lambda f: value(f, "special_tokens", specials)),
        ("chat format", lambda f: value(f, "chat_format")),
        ("first turn (user: 你好！Hello!)", first_turn),
    ]),
    ("Tokenizer efficiency", [
        ("five seed prompts", tokens_line("seed_prompt_tokens", "tokens_per_char_seed_prompts",
                                          "chars_per_token_seed_prompts")),
        ("English sample", tokens_line("", "tokens_per_char_english", "chars_per_token_english")),
    ]),
    ("Memory", [
        *[(f"weights {name}", precision("weights_bytes", name)) for name in
          ("bf16", "int8", "gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "this file")],
        ("KV cache per token (16-bit)", lambda f: value(f, "kv_cache_bytes_per_token", size)),
        ("KV cache, full context", lambda f: value(f, "kv_cache_bytes_full_context", size)),
        ("memory bandwidth", bandwidth),
        *[(f"decode ceiling {name}", precision("decode_ceiling_tokens_per_s", name)) for name in
          ("bf16", "int8", "gguf-q8_0", "gguf-q4_k_m", "this file")],
    ]),
]


def rows(facts: list[dict]) -> list[tuple[str, str, list[str], bool]]:
    """(section, label, one value per model, differs) for every row; rows no model has are left out."""
    out = []
    for section, items in SECTIONS:
        for label, show in items:
            values = [show(f) for f in facts]
            if label.endswith("this file") and all(v in (MISSING, NOT_APPLICABLE) for v in values):
                continue
            out.append((section, label, values, len(set(values)) > 1))
    return out


def headers(facts: list[dict]) -> list[str]:
    return [f.get("label") or f.get("name") or "?" for f in facts]


def notes(facts: list[dict]) -> list[str]:
    """One line per model note and per unreadable model."""
    shared = set.intersection(*(set(f.get("notes") or []) for f in facts)) if len(facts) > 1 else set()
    out = []
    for f in facts:
        who = f.get("label") or f.get("name")
        if "error" in f:
            out.append(f"{who}: {f['error']}")
        out += [f"{who}: {n}" for n in dict.fromkeys(f.get("notes") or []) if n not in shared]
    return out + sorted(shared)


def render_text(facts: list[dict], width: int = 44) -> str:
    """A terminal table: label column, one wrapped column per model, ≠ before rows that differ."""
    label_w = 30
    heads = [h[:width] for h in headers(facts)]
    lines = ["  " + "".ljust(label_w) + " | ".join(h.ljust(width) for h in heads)]
    section = None
    for sec, label, values, differs in rows(facts):
        if sec != section:
            section = sec
            lines += ["", f"  {sec}"]
        cells = [textwrap.wrap(v, width) or [""] for v in values]
        for n in range(max(len(c) for c in cells)):
            mark = ("≠ " if differs else "  ") if n == 0 else "  "
            head = (label if n == 0 else "")[:label_w].ljust(label_w)
            lines.append(mark + head + " | ".join((c[n] if n < len(c) else "").ljust(width) for c in cells).rstrip())
    extra = notes(facts)
    if extra:
        lines += ["", "  Notes"] + [f"  - {n}" for n in extra]
    return "\n".join(lines) + "\n"


def render_markdown(facts: list[dict]) -> str:
    """A Markdown table (model text escaped) with a ≠ column marking rows that differ."""
    out = ["| ≠ | | " + " | ".join(md_cell(h) for h in headers(facts)) + " |",
           "|---|---|" + "---|" * len(facts)]
    for section, label, values, differs in rows(facts):
        cells = [f"**{md_cell(v)}**" if differs else md_cell(v) for v in values]
        out.append(f"| {'≠' if differs else ''} | {md_cell(section + ' · ' + label)} | " + " | ".join(cells) + " |")
    out += [""] + [f"- {md_cell(n)}" for n in notes(facts)]
    return "\n".join(out) + "\n"


CSS = """
.arch{border-collapse:collapse;font-size:.9rem;width:100%}.arch td.label{white-space:nowrap}.arch td,.arch th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}.arch th.sec{background:#eef;font-weight:600}
.arch tr.diff td{background:#fff4d6}.arch tr.diff td.label::before{content:"≠ ";color:#b45309;font-weight:700}
.arch .tokens{font-family:ui-monospace,monospace;font-size:.8rem;word-break:break-all}
.arch-notes{font-size:.85rem;color:#444}
"""


def render_html(facts: list[dict]) -> str:
    """An HTML table (every value escaped); rows that differ have class "diff"."""
    esc = lambda t: html.escape(str(t), quote=True)  # noqa: E731
    out = ['<table class="arch"><tr><th></th>' + "".join(f"<th>{esc(h)}</th>" for h in headers(facts)) + "</tr>"]
    section = None
    for sec, label, values, differs in rows(facts):
        if sec != section:
            section = sec
            out.append(f'<tr><th class="sec" colspan="{len(facts) + 1}">{esc(sec)}</th></tr>')
        cls = ' class="tokens"' if label.startswith(("first turn", "special")) else ""
        out.append(f'<tr{" class=diff" if differs else ""}><td class="label">{esc(label)}</td>'
                   + "".join(f"<td{cls}>{esc(v)}</td>" for v in values) + "</tr>")
    out.append("</table>")
    extra = notes(facts)
    if extra:
        out.append('<ul class="arch-notes">' + "".join(f"<li>{esc(n)}</li>" for n in extra) + "</ul>")
    return "".join(out)


SECTION_TITLE = "Architecture (read from config, tokenizer and GGUF header; ≠ marks differences)"


def section_markdown(facts: list[dict]) -> list[str]:
    """The report's architecture section as Markdown lines (none without facts)."""
    return [f"## {SECTION_TITLE}", "", render_markdown(facts)] if facts else []


def section_html(facts: list[dict]) -> str:
    """The report's architecture section as HTML (empty without facts)."""
    if not facts:
        return ""
    return f"<h2>{html.escape(SECTION_TITLE)}</h2><style>{CSS}</style>{render_html(facts)}"
