"""Callbacks for the Report tab and for voting on stored (batch-generated) battles.

Generate now, vote later: `report` runs a prompt suite through both models and stores every pair
as a blind battle; the "Vote on stored battles" panel shows them one at a time, hidden names,
revealed after the vote.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from llm_compare.errors import UserError
from llm_compare.presets import groups
from llm_compare.report import run_suite, write_report
from llm_compare.params import settings_from_input
from llm_compare.ui.handlers import OUTCOME_WORDS, leaderboard_outputs, notice
from llm_compare.ui.session import AppContext


def suite_choices(ctx: AppContext) -> list[str]:
    return groups(ctx.presets)


def make_report(ctx: AppContext):
    def run_report(group, model_a, model_b, max_new_tokens, greedy, progress=gr.Progress()):
        """Run a preset group through both models (fair sequential timing), write report.md/.html."""
        try:
            presets = [p for p in ctx.presets if p.group == group]
            if not presets:
                raise UserError(f"no prompts in group {group!r}; pick a group from the list")
            spec_a, spec_b = ctx.spec(model_a, "a"), ctx.spec(model_b, "b")
            params, _ = settings_from_input(max_new_tokens, greedy)  # defaults; each model's recommendations below
            progress(0, desc=f"loading {spec_a.label} and {spec_b.label}")

            def show(n, total, preset, state):
                done = n + (1 if state.finished else 0)
                progress(done / total, desc=f"{done}/{total} · {preset.label}")

            report = run_suite(presets, spec_a, spec_b, params, ctx.pool, suite=group, store=ctx.store,
                               progress=show, recommended=True)
            out = Path(tempfile.mkdtemp(prefix=f"report-{time.strftime('%Y%m%d-%H%M%S')}-"))
            md, page = write_report(report, out)
        except UserError as e:
            raise notice(e) from None
        stored = [r.battle_id for r in report.results if r.battle_id is not None]
        failed = sum(1 for r in report.results if r.a.error or r.b.error)
        line = f"✅ {len(report.results)} prompts · {len(stored)} stored as blind battles to vote on"
        if failed:
            line += f" · ⚠️ {failed} with an error (see the report)"
        if report.store_error:
            line += f" · ⚠️ {report.store_error}"
        return [str(md), str(page)], md.read_text(encoding="utf-8"), line

    return run_report


def _stored_view(ctx: AppContext, battle, revealed: bool, note: str = "") -> tuple:
    """Both chats, both headings, the note, four vote buttons and the battle id (state)."""
    if battle is None:
        waiting = len(ctx.store.unvoted_battles(source="batch", limit=None)) if ctx.store else 0
        msg = note or ("No batch battles are waiting for a vote: run a report first." if not waiting else "")
        return ([], [], "**A**", "**B**", msg, *(gr.update(interactive=False) for _ in range(4)), None)
    hidden = battle.anony and not revealed

    def head(side, name):
        label = ctx.registry.models[name].label if name in ctx.registry.models else name
        return f"**{side.upper()}** · " + (f"Model {side.upper()}" if hidden else label)

    def chat(conversation):
        return [{"role": m["role"], "content": m.get("content") or ""} for m in conversation
                if m.get("role") in ("user", "assistant")]

    waiting = len(ctx.store.unvoted_battles(source="batch", limit=None))
    info = note or f"Battle {battle.id} ({battle.source}) · {waiting} waiting for a vote. Which answer is better?"
    return (chat(battle.conversation_a), chat(battle.conversation_b), head("a", battle.model_a), head("b", battle.model_b),
            info, *(gr.update(interactive=not revealed) for _ in range(4)), battle.id)


def make_stored(ctx: AppContext):
    def next_battle(current):
        """Show the oldest battle still waiting for a vote (skipping the one on screen)."""
        if ctx.store is None:
            return _stored_view(ctx, None, False, "Votes are off: no vote database.")
        waiting = [b for b in ctx.store.unvoted_battles(source="batch", limit=2) if b.id != current]
        return _stored_view(ctx, waiting[0] if waiting else None, False)

    def voter(outcome):
        def cast(current, blind_only):
            if ctx.store is None or current is None:
                raise notice(UserError("no battle on screen; press Next battle first"))
            try:
                ctx.store.record_vote(int(current), outcome)
            except UserError as e:
                raise notice(e) from None
            battle = ctx.store.get_battle(int(current))
            names = " · ".join(
                f"**{s.upper()}** was **{ctx.registry.models[n].label if n in ctx.registry.models else n}**"
                for s, n in (("a", battle.model_a), ("b", battle.model_b)))
            view = _stored_view(ctx, battle, True, f"✅ Vote saved: *{OUTCOME_WORDS[outcome]}*. {names}")
            return (*view, *leaderboard_outputs(ctx, blind_only))

        return cast

    return next_battle, {o: voter(o) for o in OUTCOME_WORDS}
