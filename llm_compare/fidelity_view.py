"""Fidelity figures as text: the command's table, the report section (Markdown and HTML), the app's line.

Labels are prompt labels from a preset file (user text): escaped in Markdown and HTML.
"""

from __future__ import annotations

import html

from llm_compare.errors import UserError
from llm_compare.fidelity import Fidelity, answers_fidelity

COLUMNS = ("tokens", "top-1 agree", "KL mean", "KL median", "KL p99", "ppl A", "ppl B", "greedy parts at")
HOW_TO_READ = ("B read the same tokens as reference A, teacher-forced. top-1 agree: share of positions where both "
               "would pick the same next token. KL: divergence of B's next-token distribution from A's (0 = identical; "
               "llama-perplexity --kl-divergence). ppl: each model's perplexity of the text. greedy parts at: first "
               "scored token where the two greedy choices differ (— never).")


def kl_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.1e}"


def cells(f: Fidelity) -> list[str]:
    d = f.to_dict()
    if not d["positions"]:
        return ["0"] + ["—"] * (len(COLUMNS) - 1)
    return [str(d["positions"]), f"{100 * d['top1_agreement']:.1f} %", kl_text(d["kl_mean"]), kl_text(d["kl_median"]),
            kl_text(d["kl_p99"]), f"{d['ppl_a']:.3f}", f"{d['ppl_b']:.3f}",
            split_text(f)]


def split_text(f: Fidelity) -> str:
    if f.parts:
        return f"in {f.parted} of {f.parts} texts"
    return "—" if f.first_split is None else f"token {f.first_split}"


def table_lines(parts: list[Fidelity], overall: Fidelity | None = None) -> list[str]:
    """The terminal table: one row per prompt (or text), then the overall row (if given), then the notes."""
    rows = [(p.label, cells(p)) for p in parts] + ([("overall", cells(overall))] if overall and len(parts) > 1 else [])
    name_width = min(32, max(len(label) for label, _ in rows + [("prompt", [])]))
    widths = [max(len(c), max(len(r[i]) for _, r in rows)) for i, c in enumerate(COLUMNS)]
    line = lambda name, values: "  ".join([name[:name_width].ljust(name_width)] + [v.rjust(w) for v, w in zip(values, widths)])
    out = [line("prompt", list(COLUMNS))] + [line(label, values) for label, values in rows]
    out += [f"note: {p.label}: {p.note}" for p in parts if p.note]
    return out


def summary_line(f: Fidelity) -> str:
    """One line for the Compare tab: B against A over one answer."""
    d = f.to_dict()
    if not d["positions"]:
        return f"Token fidelity: nothing scored ({f.note or 'empty answer'})"
    split = "never" if d["first_split"] is None else f"at token {d['first_split']}"
    line = (f"Token fidelity of B to A over A's answer ({d['positions']} tokens): top-1 agreement "
            f"{100 * d['top1_agreement']:.1f} % · KL mean {kl_text(d['kl_mean'])}, median {kl_text(d['kl_median'])}, "
            f"p99 {kl_text(d['kl_p99'])} · perplexity A {d['ppl_a']:.3f}, B {d['ppl_b']:.3f} · greedy choices part {split}")
    return line + (f" ({f.note})" if f.note else "")


def md(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def section_markdown(parts: list[Fidelity] | None, overall: Fidelity | None, skipped: str = "") -> list[str]:
    """The report's "Token fidelity" section (empty when not computed and no reason is given)."""
    if not parts:
        return ["## Token fidelity", "", f"Not computed: {md(skipped)}", ""] if skipped else []
    out = ["## Token fidelity (B against reference A)", "", HOW_TO_READ, "",
           "| prompt | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    rows = [(p.label, cells(p)) for p in parts] + [("**overall**", cells(overall))]
    out += [f"| {md(label) if label != '**overall**' else label} | " + " | ".join(values) + " |" for label, values in rows]
    out += [f"- {md(p.label)}: {md(p.note)}" for p in parts if p.note]
    return out + [""]


def section_html(parts: list[Fidelity] | None, overall: Fidelity | None, skipped: str = "") -> str:
    esc = lambda t: html.escape(str(t), quote=True)
    if not parts:
        return f"<h2>Token fidelity</h2><p>Not computed: {esc(skipped)}</p>" if skipped else ""
    head = "".join(f"<th>{esc(c)}</th>" for c in ("prompt", *COLUMNS))
    rows = "".join(f"<tr><td>{esc(label)}</td>" + "".join(f"<td class=num>{esc(v)}</td>" for v in values) + "</tr>"
                   for label, values in [(p.label, cells(p)) for p in parts] + [("overall", cells(overall))])
    notes = "".join(f"<li>{esc(p.label)}: {esc(p.note)}</li>" for p in parts if p.note)
    return (f"<h2>Token fidelity (B against reference A)</h2><p>{esc(HOW_TO_READ)}</p>"
            f"<table><tr>{head}</tr>{rows}</table>" + (f"<ul>{notes}</ul>" if notes else ""))


def last_answer_line(pool, spec_a, spec_b, messages_a: list[dict]) -> str:
    """The Compare tab's line for the turn just answered: both models read A's conversation (each in
    its own chat format) and B is scored over A's last answer. UserError says why it cannot be done."""
    if not messages_a or messages_a[-1].get("role") != "assistant" or not messages_a[-1].get("content"):
        raise UserError("no answer from A to measure yet: send a prompt and wait for A's answer")
    if pool.max_resident is not None and pool.max_resident < 2:
        raise UserError("token fidelity needs both models in memory; it is off with --one-model-at-a-time")
    a, b = pool.get(spec_a), pool.get(spec_b)
    parts, skipped = answers_fidelity(a, b, [("last answer", messages_a[:-1], messages_a[-1]["content"])])
    if skipped:
        raise UserError(skipped)
    return summary_line(parts[0])
