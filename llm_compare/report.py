"""The batch report: a prompt suite through two models, written as Markdown and HTML.

It replaces the hand-written comparison (answers pasted from a terminal, "20-30 s" from memory)
with measured figures: every prompt runs on both models in fair sequential timing (one model at
a time, which model goes first alternating by prompt, each model warmed up once), and every pair
is stored as a battle (source "batch", blind, random sides) to be voted on later in the app.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from llm_compare.architecture import describe_many
from llm_compare.architecture.table import section_html, section_markdown
from llm_compare.arena import not_votable, record_pair
from llm_compare.engine import PairState, SideState, Status, stream_reply
from llm_compare.errors import UserError
from llm_compare.fidelity import merged
from llm_compare.fidelity_view import section_html as fidelity_html, section_markdown as fidelity_markdown
from llm_compare.markup import esc, md_cell
from llm_compare.params import GenerationParams
from llm_compare.presets import Preset
from llm_compare.store import VoteStore, software_versions
from llm_compare.turn import messages_for, prepare_turn

METRICS = (  # (key, label, unit format)
    ("ttft_s", "first token", "{:.2f} s"),
    ("elapsed_s", "total time", "{:.2f} s"),
    ("new_tokens", "tokens", "{:.0f}"),
    ("tokens_per_s", "tokens/s", "{:.1f}"),
)


@dataclass
class PairResult:
    preset: Preset
    a: SideState
    b: SideState
    first: str  # which side ran first: "a" | "b"
    battle_id: int | None = None


@dataclass
class Report:
    suite: str
    spec_a: object  # ModelSpec
    spec_b: object
    params: GenerationParams
    results: list[PairResult] = field(default_factory=list)
    planned: int = 0  # prompts in the suite; more than len(results) when the run was interrupted
    interrupted: bool = False  # Ctrl-C: the results are the prompts that finished
    store_error: str | None = None  # why answers stopped being stored for voting, if they did
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    versions: dict = field(default_factory=software_versions)
    architecture: list = field(default_factory=list)  # architecture.describe_many of A and B
    extra_sections: list = field(default_factory=list)  # (Markdown, HTML) after the summary: a judge's verdict
    fidelity: list = field(default_factory=list)  # fidelity.Fidelity per prompt: B against A over A's answers
    fidelity_skipped: str = ""  # why there are none (different tokenizers, a remote model, ...)


def warm_up(backend, params: GenerationParams) -> None:
    """One short generation, so the first timed prompt does not pay one-off start-up costs."""
    for _ in stream_reply(backend, messages_for("Hi"), params.replace(max_new_tokens=2)):
        pass


def run_suite(
    presets: list[Preset],
    spec_a,
    spec_b,
    params: GenerationParams,
    pool,
    *,
    suite: str = "suite",
    store: VoteStore | None = None,
    system: str | None = None,
    progress: Callable[[int, int, Preset, object], None] | None = None,
    rng: random.Random | None = None,
    recommended: bool = False,
    user_set: frozenset[str] = frozenset(),
) -> Report:
    """Run every preset through both models (sequentially) and store each finished pair.

    `recommended`: each model's recommended values fill the tunable settings not in `user_set`
    (engine.side_params); otherwise `params` apply to both sides as they are. Finished work is never
    thrown away: Ctrl-C ends the run with the prompts that finished (`interrupted`), and a store
    that fails stops the storing (`store_error`), not the run.
    """
    if not presets:
        raise UserError(f"prompt suite {suite!r} is empty; add [[prompts]] with group, label and text")
    rng = rng or random.Random()
    for spec in {spec_a.name: spec_a, spec_b.name: spec_b}.values():
        warm_up(pool.get(spec), params)
    report = Report(suite=suite, spec_a=spec_a, spec_b=spec_b, params=params, planned=len(presets),
                    architecture=describe_many([spec_a, spec_b]))
    try:
        for n, preset in enumerate(presets):
            turn = prepare_turn(preset.text, {"a": spec_a, "b": spec_b}, pool, params, user_set=user_set,
                                recommended=recommended, system=system, sequential=True)
            first = "a" if n % 2 == 0 else "b"
            final, ctrl_c = _run_pair(turn, first, lambda state: progress and progress(n, len(presets), preset, state))
            with _ctrl_c_deferred():  # a finished pair is stored and listed whole, or not at all
                result = PairResult(preset, final.side("a"), final.side("b"), first)
                if store is not None and not_votable(result.a, result.b) is None:
                    try:
                        result.battle_id = store_pair(store, result, spec_a, spec_b, params, turn.a.messages, suite,
                                                      rng, report.versions)
                    except UserError as e:  # disk full, database locked: the report itself still gets written
                        report.store_error, store = str(e), None
                report.results.append(result)
            if ctrl_c:
                raise KeyboardInterrupt
    except KeyboardInterrupt:  # Ctrl-C: stream_pair stopped the pair in flight; keep the finished ones
        report.interrupted = True
    return report


@contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it; only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _run_pair(turn, first: str, on_update) -> tuple[PairState, bool]:
    """Stream one pair to its end: (final state, whether Ctrl-C came after both sides had finished)."""
    final = None
    try:
        for final in turn.stream(tick_s=0.25, b_first=first == "b"):
            on_update(final)
    except KeyboardInterrupt:
        if final is None or not final.finished:
            raise
        return final, True  # both answers were complete: keep this pair too
    return final, False


def store_pair(store, result: PairResult, spec_a, spec_b, params, msgs, suite, rng, versions) -> int:
    """A blind battle with sides drawn at random (the report itself always shows A left; the
    settings stored: arena.stored_settings)."""
    sides = [(spec_a, result.a), (spec_b, result.b)]
    if rng.random() < 0.5:
        sides.reverse()
    (left_spec, left), (right_spec, right) = sides
    return record_pair(store, left_spec, left, right_spec, right, msgs, params=params, anony=True, source="batch",
                       question_id=f"{suite}/{result.preset.label}", versions=versions)


# -- summary --------------------------------------------------------------------------------------

def medians(states: list[SideState]) -> dict[str, float | None]:
    """Median of each metric over the prompts that side answered without error."""
    ok = [s.metrics for s in states if not s.error]
    out = {}
    for key, _, _ in METRICS:
        values = [getattr(m, key) for m in ok if getattr(m, key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def fmt(key: str, value) -> str:
    if value is None:
        return "–"
    return next(f for k, _, f in METRICS if k == key).format(value)


def summary_rows(report: Report) -> list[tuple[str, str, str]]:
    """(metric label, A, B) rows of the summary table."""
    ma = medians([r.a for r in report.results])
    mb = medians([r.b for r in report.results])
    rows = [(f"median {label}", fmt(key, ma[key]), fmt(key, mb[key])) for key, label, _ in METRICS]
    errors = lambda side: sum(1 for r in report.results if getattr(r, side).error)
    rows.append(("prompts answered", f"{len(report.results) - errors('a')}/{len(report.results)}",
                 f"{len(report.results) - errors('b')}/{len(report.results)}"))
    if report.interrupted:
        ran = f"{len(report.results)} of {report.planned} (interrupted)"
        rows.append(("prompts run", ran, ran))
    return rows


def side_cells(state: SideState) -> list[str]:
    return [fmt(key, getattr(state.metrics, key)) for key, _, _ in METRICS]


def answer_of(state: SideState) -> str:
    return f"[error] {state.error}" if state.error else state.text


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def model_line(spec) -> str:
    return f"{spec.label} ({spec.name}; {spec.backend}, {spec.dtype}; source {spec.source})"


def settings_line(report: Report) -> str:
    p = report.params
    mode = "greedy" if p.greedy else f"sampling (temperature {p.temperature}, top-p {p.top_p}, seed {p.seed})"
    return f"max new tokens {p.max_new_tokens}, {mode}, repetition penalty {p.repetition_penalty}"


def battle_ids(report: Report) -> list[int]:
    return [r.battle_id for r in report.results if r.battle_id is not None]


# -- Markdown -------------------------------------------------------------------------------------

def render_markdown(report: Report) -> str:
    a, b = report.spec_a, report.spec_b
    out = [
        f"# {md_cell(a.label)} vs {md_cell(b.label)}: {md_cell(report.suite)}",
        "",
        f"- A: {md_cell(model_line(a))}",
        f"- B: {md_cell(model_line(b))}",
        f"- settings: {settings_line(report)}; fair sequential timing (one model at a time, "
        "order alternating by prompt, each model warmed up once)",
        f"- machine: {machine()}; " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
        f"- made {report.created}",
        "",
        *section_markdown(report.architecture),
        "## Summary",
        "",
        f"| | A: {md_cell(a.label)} | B: {md_cell(b.label)} |",
        "|---|---|---|",
    ]
    out += [f"| {label} | {va} | {vb} |" for label, va, vb in summary_rows(report)]
    out += ["", *fidelity_markdown(report.fidelity, merged(report.fidelity), report.fidelity_skipped)]
    ids = battle_ids(report)
    if ids:
        out += ["", f"Stored as blind battles {ids[0]}–{ids[-1]} (random sides): vote on them in the app."]
    out += [f"\n{section_md}" for section_md, _ in report.extra_sections]
    for n, r in enumerate(report.results, 1):
        out += ["", f"## {n}. {md_cell(r.preset.label)}", "", "> " + md_cell(r.preset.text), "",
                f"| | A: {md_cell(a.label)} | B: {md_cell(b.label)} |", "|---|---|---|"]
        for (key, label, _), va, vb in zip(METRICS, side_cells(r.a), side_cells(r.b)):
            out.append(f"| {label} | {va} | {vb} |")
        out.append(f"| ran | {order(r, 'a')} | {order(r, 'b')} |")
        out.append(f"| answer | {md_cell(answer_of(r.a))} | {md_cell(answer_of(r.b))} |")
    return "\n".join(out) + "\n"


# -- HTML -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#1a1a1a;line-height:1.5}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:.9rem}.prompt{background:#f7f7f9;border-left:4px solid #999;padding:.5rem .8rem;white-space:pre-wrap}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.side h3{font-size:1rem;margin:.4rem 0}
.answer{white-space:pre-wrap;word-wrap:break-word;background:#fcfcfc;border:1px solid #e3e3e3;padding:.6rem;font-family:inherit;margin:0}
.error{color:#b00020}.figures{font-size:.85rem;color:#333}
@media (max-width:800px){.pair{grid-template-columns:1fr}}
"""


def order(result: PairResult, side: str) -> str:
    return "first" if result.first == side else "second"


def html_side(title: str, state: SideState, ran: str) -> str:
    figures = " · ".join(f"{label} {value}" for (_, label, _), value in zip(METRICS, side_cells(state)))
    figures += f" · ran {ran}"
    body = (f'<pre class="answer error">{esc(answer_of(state))}</pre>' if state.error
            else f'<pre class="answer">{esc(state.text)}</pre>')
    return f'<div class="side"><h3>{esc(title)}</h3><div class="figures">{esc(figures)}</div>{body}</div>'


def render_html(report: Report) -> str:
    a, b = report.spec_a, report.spec_b
    rows = "".join(f"<tr><th>{esc(l)}</th><td class=num>{esc(va)}</td><td class=num>{esc(vb)}</td></tr>"
                   for l, va, vb in summary_rows(report))
    overview = "".join(
        f"<tr><td><a href='#p{n}'>{esc(r.preset.label)}</a></td>"
        + "".join(f"<td class=num>{esc(v)}</td>" for pair in zip(side_cells(r.a), side_cells(r.b)) for v in pair)
        + "</tr>"
        for n, r in enumerate(report.results, 1)
    )
    head = "".join(f"<th>{esc(label)} A</th><th>{esc(label)} B</th>" for _, label, _ in METRICS)
    ids = battle_ids(report)
    stored = (f"<p>Stored as blind battles {ids[0]}–{ids[-1]} (random sides): vote on them in the app.</p>"
              if ids else "")
    prompts = "".join(
        f'<section id="p{n}"><h2>{n}. {esc(r.preset.label)}</h2><div class="prompt">{esc(r.preset.text)}</div>'
        f'<div class="pair">{html_side("A: " + a.label, r.a, order(r, "a"))}'
        f'{html_side("B: " + b.label, r.b, order(r, "b"))}</div></section>'
        for n, r in enumerate(report.results, 1)
    )
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items())
    title = f"{a.label} vs {b.label}: {report.suite}"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p class="meta">A: {esc(model_line(a))}<br>B: {esc(model_line(b))}<br>
settings: {esc(settings_line(report))}; fair sequential timing (one model at a time, order alternating by prompt, each model warmed up once)<br>
machine: {esc(machine())}; {esc(versions)}<br>made {esc(report.created)}</p>
{section_html(report.architecture)}
<h2>Summary</h2>
<table><tr><th></th><th>A: {esc(a.label)}</th><th>B: {esc(b.label)}</th></tr>{rows}</table>
{stored}
{"".join(section for _, section in report.extra_sections)}
<table><tr><th>prompt</th>{head}</tr>{overview}</table>
{fidelity_html(report.fidelity, merged(report.fidelity), report.fidelity_skipped)}
{prompts}
</body></html>
"""


def check_out_dir(out_dir: str | Path) -> Path:
    """Create `out_dir` and make sure files can be written there, before an hour of generation."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UserError(
            f"cannot write the report to {out}: {e.strerror}; pass --out with a writable directory"
        ) from None
    return out


def write_report(report: Report, out_dir: str | Path) -> tuple[Path, Path]:
    """report.md and report.html in `out_dir` (created if missing)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        md, page = out / "report.md", out / "report.html"
        md.write_text(render_markdown(report), encoding="utf-8")
        page.write_text(render_html(report), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the report to {out}: {e.strerror}; pass --out with a writable directory") from None
    return md, page


# -- progress -------------------------------------------------------------------------------------

def progress_bar(stream=None, width: int = 24):
    """A progress callback drawing one updating line on a terminal, one line per prompt otherwise."""
    stream = stream or sys.stderr
    live = stream.isatty()
    last_done = [-1]

    def show(n: int, total: int, preset: Preset, state) -> None:
        done = n + (1 if state.finished else 0)
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        side = state.a if state.a.status == Status.RUNNING else state.b
        line = (f"[{bar}] {done}/{total} {preset.label[:30]} · "
                f"{side.side.upper()} {side.metrics.new_tokens} tok {side.metrics.elapsed_s:.1f} s")
        if live:
            stream.write("\r" + line.ljust(100)[:100] + ("\n" if done == total and state.finished else ""))
            stream.flush()
        elif state.finished and done != last_done[0]:
            last_done[0] = done
            stream.write(line + "\n")
            stream.flush()

    return show
