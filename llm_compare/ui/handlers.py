"""Gradio callbacks for the Compare tab: closures over one `AppContext` and the tab's components.

Model plumbing lives in `session` (run_turn, vote); these functions only turn its frames into
{component: value} updates, and `UserError`s about the whole request into a Gradio notice.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llm_compare.errors import UserError
from llm_compare.fidelity_view import last_answer_line
from llm_compare.params import GenerationParams, settings_from_input
from llm_compare.ui.leaderboard_tab import BoardView, leaderboard_outputs
from llm_compare.ui.session import SIDES, AppContext, Conversation, Frame, final_frame, run_turn, vote
from llm_compare.ui.widgets import OUTCOME_WORDS, heading, notice, vote_buttons

STOP_GRACE_S = 0.5  # let the stream yield its own "stopped" frame before the cancel closes it
SETTLE_TIMEOUT_S = 15.0


@dataclass
class Pane:
    """One side's components."""

    head: gr.Markdown
    chat: gr.Chatbot
    timer: gr.Markdown
    stop: gr.Button
    stats: gr.Markdown
    load: gr.Markdown


@dataclass
class CompareView:
    """The Compare tab's components that callbacks update, by name."""

    pickers: dict  # side -> Dropdown
    blind: gr.Checkbox
    blind_pool: gr.Dropdown
    panes: dict  # side -> Pane
    votes: dict  # outcome -> Button
    note: gr.Markdown
    prompt: gr.Textbox
    send: gr.Button
    regen: gr.Button
    status: gr.Markdown
    conv: gr.State  # this session's Conversation

    @property
    def turn_outputs(self) -> list:
        """What a turn updates, in the `/compare` API's order (gradio_client users read results by position)."""
        per_side = [getattr(self.panes[s], part) for part in ("chat", "head", "timer", "stats") for s in SIDES]
        return [*per_side, self.status, self.prompt, self.send, self.regen, *self.votes.values(), self.note]


def vote_note(conv: Conversation) -> str:
    """The line under the vote buttons: what to do, what was voted, who was who."""
    if conv.voted is not None:
        reveal = " · ".join(f"**{s.upper()}** was **{conv.real_labels.get(s, '?')}**" for s in SIDES)
        return f"✅ Vote saved: *{OUTCOME_WORDS[conv.voted]}*. {reveal}" if conv.blind else \
            f"✅ Vote saved: *{OUTCOME_WORDS[conv.voted]}* (battle {conv.battle_id})."
    if conv.battle_id is not None and not conv.running:
        warn = ""
        if conv.self_words:
            warn = (f" ⚠️ An answer names a model ({', '.join(conv.self_words)}): this vote is kept but left out "
                    "of blind ratings.")
        return f"Which answer is better? (battle {conv.battle_id}){warn}"
    return conv.note if not conv.running else ""


def vote_outputs(view: CompareView, conv: Conversation) -> dict:
    """Both headings (names revealed after a blind vote), the vote buttons and the note."""
    return {**{view.panes[s].head: heading(s, conv.labels[s]) for s in SIDES},
            **vote_buttons(view.votes, conv.can_vote), view.note: vote_note(conv)}


def frame_outputs(view: CompareView, frame: Frame, conv: Conversation, *, busy: bool, prompt_box=None) -> dict:
    """A turn's update of every component in `view.turn_outputs` (the prompt box is skipped unless given)."""
    out = {}
    for s in SIDES:
        pane = view.panes[s]
        out |= {pane.chat: frame.chats[s], pane.timer: frame.times[s], pane.stats: frame.stats[s]}
    out |= {view.status: frame.status, view.prompt: gr.skip() if prompt_box is None else prompt_box,
            view.send: gr.update(interactive=not busy), view.regen: gr.update(interactive=not busy)}
    return out | vote_outputs(view, conv)


def params_from_inputs(max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy) -> GenerationParams:
    """The sliders' settings (all set; "use recommended" decides per turn whether models override them)."""
    return settings_from_input(max_new_tokens, greedy, seed, temperature=temperature, top_p=top_p,
                               repetition_penalty=repetition_penalty)[0]


def make_compare(ctx: AppContext, view: CompareView):
    def stream_turn(conv, prompt, picked, settings, system, options):
        try:
            params = params_from_inputs(*settings)
            frames = run_turn(ctx, conv, prompt, picked, params, system=system or "",
                              sequential=bool(options["fair"]), blind=bool(options["blind"]),
                              blind_pool=options["blind_pool"], recommended=bool(options["recommended"]))
            first = next(frames)
        except UserError as e:
            raise notice(e) from None
        yield frame_outputs(view, first, conv, busy=True, prompt_box="")
        try:
            for frame in frames:
                yield frame_outputs(view, frame, conv, busy=not frame.finished)
        finally:
            frames.close()
        yield frame_outputs(view, final_frame(conv, "done"), conv, busy=False)

    def compare(prompt, system, model_a, model_b, max_new_tokens, temperature, top_p, repetition_penalty,
                seed, greedy, fair, recommended, blind, blind_pool, conv):
        """Send one prompt to both models; streams both chats, counters and metrics."""
        settings = (max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy)
        options = dict(fair=fair, recommended=recommended, blind=blind, blind_pool=blind_pool)
        yield from stream_turn(conv, prompt, {"a": model_a, "b": model_b}, settings, system, options)

    def regenerate(system, model_a, model_b, max_new_tokens, temperature, top_p, repetition_penalty,
                   seed, greedy, fair, recommended, blind, blind_pool, conv):
        if conv.running:
            raise notice(UserError("a comparison is running; wait for it or press Stop"))
        prompt = conv.drop_last_turn()
        if prompt is None:
            raise notice(UserError("nothing to regenerate yet; send a prompt first"))
        settings = (max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy)
        options = dict(fair=fair, recommended=recommended, blind=blind, blind_pool=blind_pool)
        yield from stream_turn(conv, prompt, {"a": model_a, "b": model_b}, settings, system, options)

    return compare, regenerate


def make_stop(ctx: AppContext, view: CompareView):
    def stop_both(conv):
        """Stop both sides; a no-op when idle."""
        run = conv.run
        if run is not None and not run.finished.is_set():
            run.stopped_by_user = True
            run.stop_all()
            run.finished.wait(STOP_GRACE_S)

    def settle(conv):
        """After Stop's cancel: show the final state and re-enable Send (idle: change nothing)."""
        run = conv.run
        if run is None or not run.stopped_by_user:  # Stop when idle changes nothing
            return {component: gr.skip() for component in view.turn_outputs}
        run.finished.wait(SETTLE_TIMEOUT_S)
        return frame_outputs(view, final_frame(conv, "stopped"), conv, busy=False)

    def side_stopper(side):
        def stop_side(conv):
            if conv.running:
                conv.run.stop_side(side)
        return stop_side

    return stop_both, settle, side_stopper("a"), side_stopper("b")


def make_fidelity(ctx: AppContext):
    def measure(conv):
        """Token fidelity of B to A over A's last answer, on request (fidelity_view.last_answer_line)."""
        if conv.running:
            return "⏳ wait until both answers have finished, then measure"
        try:
            specs = [ctx.spec(conv.names.get(s), s) for s in SIDES]
            return last_answer_line(ctx.pool, *specs, conv.messages["a"])
        except UserError as e:
            return f"⚠️ {e}"

    return measure


def make_clear(ctx: AppContext, view: CompareView):
    def clear(conv):
        if conv.running:
            conv.run.stop_all()
            conv.run.finished.wait(SETTLE_TIMEOUT_S)
        conv.clear()
        for s in SIDES:
            conv.labels[s] = ""
        return frame_outputs(view, final_frame(conv, ""), conv, busy=False, prompt_box="")

    return clear


def make_vote(ctx: AppContext, view: CompareView, board: BoardView, outcome: str):
    def cast(conv, blind_only, voters, category):
        try:
            vote(ctx, conv, outcome)
        except UserError as e:
            raise notice(e) from None
        return vote_outputs(view, conv) | leaderboard_outputs(ctx, board, blind_only, voters, category)

    return cast


def make_blind_toggle(ctx: AppContext, view: CompareView):
    def toggle(blind, model_a, model_b, conv):
        """Blind mode hides the pickers; switching either way starts a new conversation on the next Send."""
        specs = {"a": ctx.spec(model_a, "a"), "b": ctx.spec(model_b, "b")}
        out = {view.pickers[s]: gr.update(interactive=not blind) for s in SIDES}
        out[view.blind_pool] = gr.update(visible=bool(blind))
        if blind:
            out[view.status] = "🎲 Blind mode: the next Send starts a new conversation with two hidden models."
        else:
            out[view.status] = "Blind mode off: the picked models answer from the next Send."
        for s in SIDES:  # hidden models: "Model A/B" and no notes (a model's notes would name it)
            pane = view.panes[s]
            if conv.running:
                out |= {pane.head: gr.skip(), pane.load: gr.skip()}
            else:
                out |= {pane.head: heading(s, f"Model {s.upper()}" if blind else specs[s].label),
                        pane.load: "" if blind else specs[s].notes}
        return out

    return toggle


def make_load(ctx: AppContext, side: str):
    def load(name, conv):
        """Load the picked model now (the pool shares it between sides and users)."""
        try:
            spec = ctx.spec(name, side)
        except UserError as e:
            yield heading(side, ""), f"⚠️ {e}"
            return
        if not conv.hidden and not conv.running:
            conv.labels[side] = spec.label
        shown = heading(side, conv.labels[side] or spec.label)
        notes = "" if conv.hidden else f" · {spec.notes}" if spec.notes else ""  # e.g. "English only"
        if ctx.pool.is_loaded(spec):
            yield shown, f"{spec.label}: loaded{notes}"
            return
        yield shown, f"⏳ loading {spec.label} …"
        try:
            backend = ctx.pool.get(spec)
        except UserError as e:
            yield shown, f"⚠️ {spec.label}: {e}"
            return
        except Exception as e:  # shown, not raised: the other side stays usable
            yield shown, f"⚠️ {spec.label} failed to load: {type(e).__name__}: {e}"
            return
        choice = "" if conv.hidden or not backend.dtype_choice else f" · {backend.dtype_choice}"
        yield shown, f"{spec.label}: loaded in {backend.load_seconds:.1f} s{choice}{notes}"

    return load


def make_preset(ctx: AppContext):
    def pick(index):
        if index in (None, ""):
            return gr.skip()
        return ctx.presets[int(index)].text

    return pick
