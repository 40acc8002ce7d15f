"""What dtype "auto" becomes for one model here, and why: the one decision loading, `doctor` and `ask` share.

Candidates, each projected to one representative turn of the whole model (a TURN_PROMPT-token prompt
+ TURN_NEW new tokens) from figures measured on this CPU and cached per machine:

- float32 and bfloat16 on transformers (`cpu_probe.dtype_costs`: one weight at the model's width,
  scaled by parameters / (hidden x MLP)) — they keep the model's answers;
- for a model directory the GGUF exporter covers (`gguf.plan.plan_export`), the quantized exports
  gguf-q4_k_m and gguf-q8_0 run by llama.cpp (`gguf_probe.gguf_costs`, per parameter), each with
  its one-time export (unless already cached) spread over EXPORT_TURNS turns.

A type is skipped when the model would not fit in free RAM at it (or its export not on disk).
A quantized type changes the answers, so it is chosen only when the model is big enough that it
matters — its fastest unquantized turn here takes over QUICK_TURN_S — and it is at least MIN_SPEEDUP
faster, export included. The limits are about what a user waits for, never fitted to a machine: the
measured figures decide on which side of them a model falls on this CPU. Small models keep today's
choice, and an explicit dtype (a flag, the registry, LLM_COMPARE_DTYPE) is never overridden.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from llm_compare import cpu_probe, gguf_probe
from llm_compare.cpu_probe import DTYPE_ENV, TURN_NEW, TURN_PROMPT
from llm_compare.errors import UserError
from llm_compare.families import family_of
from llm_compare.loading import resolve_source
from llm_compare.loading.gguf.export import disk_needs, needs
from llm_compare.loading.gguf.plan import check_supported, plan_export
from llm_compare.loading.memory import available_bytes, estimate
from llm_compare.specs import AUTO_DTYPE, DTYPES

QUICK_TURN_S = 10.0  # an unquantized turn this quick (≈ 20+ tokens/s) is not worth changing the answers for
MIN_SPEEDUP = 1.5  # a quantized type must save at least a third of the wait, export included
EXPORT_TURNS = 20  # the one-time export is counted against this many turns (a conversation or two)
QUANTIZED = {"gguf-q4_k_m": "4-bit quantized", "gguf-q8_0": "8-bit quantized"}


@dataclass(frozen=True)
class Choice:
    """The dtype "auto" resolved to, one line saying why, and the projected turn seconds behind it."""

    dtype: str
    why: str
    turn_s: dict = field(default_factory=dict)  # dtype -> projected seconds of one turn of this model
    export_s: dict = field(default_factory=dict)  # gguf dtype -> one-time export seconds still to pay

    @property
    def line(self) -> str:
        return f"auto: {self.dtype}, {self.why}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 120 else _seconds(s)


def choose(spec, fits: Callable[[str], bool] | None = None) -> Choice:
    """The choice for a transformers spec whose dtype is "auto"; `fits(dtype)`: RAM holds it (None: all fit)."""
    forced = os.environ.get(DTYPE_ENV, "").strip()
    if forced:
        return Choice(forced, f"set by {DTYPE_ENV}={forced}")
    fits = fits or (lambda dtype: True)
    hidden, mlp = cpu_probe.model_width(spec.source)
    costs = cpu_probe.dtype_costs(hidden, mlp)
    ranked = sorted(costs, key=lambda d: costs[d]["turn_s"])
    fitting = [d for d in ranked if fits(d)]
    if fitting:
        why = "fastest measured turn" if fitting[0] == ranked[0] else f"{ranked[0]} does not fit in free memory"
        kept = Choice(fitting[0], f"{why} at width {hidden}x{mlp}")
    else:  # the RAM check will say so, unless a quantized export fits
        kept = Choice(ranked[-1], "nothing unquantized fits in free memory")
    params = _parameters(spec.source)
    if params is None:
        return kept
    turn_s = {d: costs[d]["turn_s"] * params / (hidden * mlp) for d in ranked}
    kept = Choice(kept.dtype, kept.why, turn_s)
    if fitting and turn_s[kept.dtype] < QUICK_TURN_S:
        return Choice(kept.dtype, f"{kept.why} (≈{_seconds(turn_s[kept.dtype])} a turn: too quick to be worth "
                                  "quantizing)", turn_s)
    refusal, export_done = _export_refusal(spec.source)
    if refusal:
        return Choice(kept.dtype, f"{kept.why}; no GGUF export ({refusal})", turn_s)
    return _with_gguf(kept, hidden, mlp, params, fits, export_done, plain_fits=bool(fitting))


def _with_gguf(kept: Choice, hidden: int, mlp: int, params: int, fits, export_done: dict, plain_fits: bool) -> Choice:
    """`kept` or the fastest quantized export that fits and pays, export time counted."""
    try:
        figures = gguf_probe.gguf_costs(hidden, mlp)
    except Exception as e:  # noqa: BLE001 - a failed probe only means the unquantized choice stands
        return Choice(kept.dtype, f"{kept.why}; the GGUF speed probe failed ({type(e).__name__}: {e})", kept.turn_s)
    turn_s, export_s = dict(kept.turn_s), {}
    for dtype, c in figures.items():
        turn_s[dtype] = c["turn_s_per_param"] * params
        export_s[dtype] = 0.0 if export_done.get(dtype) else c["export_s_per_param"] * params
    usable = [d for d in figures if fits(d) and export_done.get(d) is not None]
    if not usable:
        return Choice(kept.dtype, f"{kept.why}; no GGUF type fits in free memory and disk", turn_s, export_s)
    best = min(usable, key=lambda d: turn_s[d] + export_s[d] / EXPORT_TURNS)
    plain = kept.dtype if plain_fits else min(kept.turn_s, key=kept.turn_s.get)
    plain_s, best_s = turn_s[plain], turn_s[best] + export_s[best] / EXPORT_TURNS
    speedup = plain_s / best_s
    if plain_fits and speedup < MIN_SPEEDUP:
        return Choice(kept.dtype, f"{kept.why}; {best} would be only {speedup:.1f}× faster here (≈{_seconds(best_s)} "
                                  f"vs ≈{_seconds(plain_s)} a turn, export counted)", turn_s, export_s)
    export = f", one-time export ≈{_duration(export_s[best])} counted" if export_s[best] else ", already exported"
    turn = f"for a {TURN_PROMPT}-token prompt + {TURN_NEW} new tokens{export}"
    if not plain_fits:
        return Choice(best, f"{QUANTIZED.get(best, 'quantized')} weights run by llama.cpp, the only type that fits in "
                            f"free memory (≈{_seconds(turn_s[best])} {turn}; {plain} would take "
                            f"≈{_seconds(plain_s)})", turn_s, export_s)
    return Choice(best, f"{QUANTIZED.get(best, 'quantized')} weights run by llama.cpp, {speedup:.1f}× faster than "
                        f"{plain} here (≈{_seconds(turn_s[best])} vs ≈{_seconds(plain_s)} {turn}); "
                        f"choose dtype {plain} for the unquantized weights", turn_s, export_s)


def _parameters(source: str) -> int | None:
    """The model's parameter count from its config or GGUF header (None: unknowable, e.g. a hub id)."""
    try:
        est = estimate(source, "bfloat16")
    except Exception:  # noqa: BLE001 - a size we cannot read only means no projection (today's choice)
        return None
    return est.params if est else None


def _export_refusal(source_text: str) -> tuple[str | None, dict]:
    """(why this source cannot take a GGUF export here, or None; {gguf dtype: already exported} for
    the types exported already or whose export fits in free disk and RAM now, as `check_room` will
    require — a type missing from it does not)."""
    import psutil

    missing = gguf_probe.available()
    if missing:
        return missing, {}
    try:
        source = resolve_source(source_text)
        if family_of(source) is None:  # a GGUF file or a hub id: plan_export covers model directories
            return f"a {source.kind} source is not a model directory", {}
        plan = plan_export(source)
        check_supported(plan)
        _, free_disk, needed = disk_needs(source)
        free_ram = psutil.virtual_memory().available
        room = {d: need == 0 or (need <= free_disk and needs(plan, d)[1] <= free_ram)
                for d, need in needed.items() if d in QUANTIZED}
    except UserError as e:
        return str(e).split("; ")[0], {}
    except Exception as e:  # noqa: BLE001 - an odd config must not stop a model that loads on transformers
        return f"cannot plan its export: {type(e).__name__}: {e}", {}
    return None, {d: needed[d] == 0 for d, fits in room.items() if fits}


def ram_fits(spec, loaded=(), available: int | None = None) -> Callable[[str], bool]:
    """Whether `spec` at a dtype fits in free RAM beside the `loaded` backends (or in `available` bytes)."""
    free = available_bytes(loaded) if available is None else available

    def fits(dtype: str) -> bool:
        try:
            est = estimate(spec.source, dtype, spec.backend, spec.context)
        except UserError:
            return True
        return est is None or est.peak_bytes <= free

    return fits


def resolve(spec, loaded=(), available: int | None = None):
    """(`spec` with "auto" replaced by the choice, the Choice or None when nothing was chosen)."""
    if spec.backend != "transformers" or spec.dtype != AUTO_DTYPE:
        return spec, None
    choice = choose(spec, ram_fits(spec, loaded, available))
    if choice.dtype not in DTYPES:
        raise UserError(f"{DTYPE_ENV}={choice.dtype} is not a precision; use one of {', '.join(DTYPES)}")
    return spec.with_overrides(dtype=choice.dtype), choice
