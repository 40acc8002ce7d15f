"""Gradio callbacks for the Compare tab: closures over one `AppContext`.

Model plumbing lives in `session` (run_turn, vote); these functions only turn its frames into
component updates, and `UserError`s about the whole request into a Gradio notice.
"""

from __future__ import annotations

import gradio as gr

from llm_compare.errors import UserError
from llm_compare.params import GenerationParams, settings_from_input
from llm_compare.ui import board
from llm_compare.ui.session import SIDES, AppContext, Conversation, Frame, final_frame, run_turn, vote

STOP_GRACE_S = 0.5  # let the stream yield its own "stopped" frame before the cancel closes it
SETTLE_TIMEOUT_S = 15.0
OUTCOME_WORDS = {"a": "A is better", "b": "B is better", "tie": "Tie", "bothbad": "Both bad"}
N_TURN_OUTPUTS = 17  # see frame_outputs


def heading(side: str, label: str) -> str:
    return f"**{side.upper()}** · {label}" if label else f"**{side.upper()}**"


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


def vote_buttons(conv: Conversation) -> tuple:
    return tuple(gr.update(interactive=conv.can_vote) for _ in range(4))


def frame_outputs(frame: Frame, conv: Conversation, *, busy: bool, prompt_box=None) -> tuple:
    """The turn events' outputs, in the order layout wires them (N_TURN_OUTPUTS of them)."""
    return (
        frame.chats["a"], frame.chats["b"],
        heading("a", conv.labels["a"]), heading("b", conv.labels["b"]),
        frame.times["a"], frame.times["b"],
        frame.stats["a"], frame.stats["b"],
        frame.status,
        gr.skip() if prompt_box is None else prompt_box,
        gr.update(interactive=not busy),  # Send
        gr.update(interactive=not busy),  # Regenerate
        *vote_buttons(conv),
        vote_note(conv),
    )


def params_from_inputs(max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy) -> GenerationParams:
    """The sliders' settings (all set; "use recommended" decides per turn whether models override them)."""
    return settings_from_input(max_new_tokens, greedy, seed, temperature=temperature, top_p=top_p,
                               repetition_penalty=repetition_penalty)[0]


def notice(e: UserError) -> gr.Error:
    return gr.Error(str(e), print_exception=False)


def make_compare(ctx: AppContext):
    def stream_turn(conv, prompt, picked, settings, system, options):
        try:
            params = params_from_inputs(*settings)
            frames = run_turn(ctx, conv, prompt, picked, params, system=system or "",
                              sequential=bool(options["fair"]), blind=bool(options["blind"]),
                              blind_pool=options["blind_pool"], recommended=bool(options["recommended"]))
            first = next(frames)
        except UserError as e:
            raise notice(e) from None
        yield frame_outputs(first, conv, busy=True, prompt_box="")
        try:
            for frame in frames:
                yield frame_outputs(frame, conv, busy=not frame.finished)
        finally:
            frames.close()
        yield frame_outputs(final_frame(conv, "done"), conv, busy=False)

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


def make_stop(ctx: AppContext):
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
            return tuple(gr.skip() for _ in range(N_TURN_OUTPUTS))
        run.finished.wait(SETTLE_TIMEOUT_S)
        return frame_outputs(final_frame(conv, "stopped"), conv, busy=False)

    def side_stopper(side):
        def stop_side(conv):
            if conv.running:
                conv.run.stop_side(side)
        return stop_side

    return stop_both, settle, side_stopper("a"), side_stopper("b")


def make_clear(ctx: AppContext):
    def clear(conv):
        if conv.running:
            conv.run.stop_all()
            conv.run.finished.wait(SETTLE_TIMEOUT_S)
        conv.clear()
        for s in SIDES:
            conv.labels[s] = ""
        return frame_outputs(final_frame(conv, ""), conv, busy=False, prompt_box="")

    return clear


def make_vote(ctx: AppContext, outcome: str):
    def cast(conv, blind_only):
        try:
            vote(ctx, conv, outcome)
        except UserError as e:
            raise notice(e) from None
        return (heading("a", conv.labels["a"]), heading("b", conv.labels["b"]), *vote_buttons(conv),
                vote_note(conv), *leaderboard_outputs(ctx, blind_only))

    return cast


def leaderboard_outputs(ctx: AppContext, blind_only) -> tuple:
    """Table, plot and summary line of the Leaderboard tab."""
    if ctx.store is None:
        return [], "", "Votes are off: no vote database."
    blind_only = blind_only != "All votes"
    lb = board.compute(ctx.store, blind_only)
    labels = {n: s.label for n, s in ctx.registry.models.items()}
    return board.table_rows(lb, labels), board.plot_svg(lb, labels), board.summary(lb, blind_only, ctx.store.counts())


def make_blind_toggle(ctx: AppContext):
    def toggle(blind, model_a, model_b, conv):
        """Blind mode hides the pickers; switching either way starts a new conversation on the next Send."""
        specs = [ctx.spec(n, s) for s, n in (("a", model_a), ("b", model_b))]
        if blind:
            heads = (heading("a", "Model A"), heading("b", "Model B"))
            notes = ("", "")  # a model's notes would name it
            status = "🎲 Blind mode: the next Send starts a new conversation with two hidden models."
        else:
            heads = tuple(heading(s, spec.label) for s, spec in zip("ab", specs))
            notes = tuple(spec.notes for spec in specs)
            status = "Blind mode off: the picked models answer from the next Send."
        if conv.running:
            heads = notes = (gr.skip(), gr.skip())
        return (gr.update(interactive=not blind), gr.update(interactive=not blind), gr.update(visible=bool(blind)),
                *heads, *notes, status)

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
        yield shown, f"{spec.label}: loaded in {backend.load_seconds:.1f} s{notes}"

    return load


def make_preset(ctx: AppContext):
    def pick(index):
        if index in (None, ""):
            return gr.skip()
        return ctx.presets[int(index)].text

    return pick
