"""Gradio callbacks for the Compare tab: closures over one `AppContext`.

Model plumbing lives in `session.run_turn`; these functions only turn its frames into component
updates, and `UserError`s about the whole request into a Gradio notice.
"""

from __future__ import annotations

import gradio as gr

from llm_compare.errors import UserError
from llm_compare.params import GenerationParams
from llm_compare.ui.session import SIDES, AppContext, Conversation, Frame, final_frame, run_turn

STOP_GRACE_S = 0.5  # let the stream yield its own "stopped" frame before the cancel closes it
SETTLE_TIMEOUT_S = 15.0


def heading(side: str, label: str) -> str:
    return f"**{side.upper()}** · {label}" if label else f"**{side.upper()}**"


def frame_outputs(frame: Frame, conv: Conversation, *, busy: bool, prompt_box=None) -> tuple:
    """The compare event's outputs, in the order layout wires them."""
    return (
        frame.chats["a"], frame.chats["b"],
        heading("a", conv.labels["a"]), heading("b", conv.labels["b"]),
        frame.times["a"], frame.times["b"],
        frame.stats["a"], frame.stats["b"],
        frame.status,
        gr.skip() if prompt_box is None else prompt_box,
        gr.update(interactive=not busy),  # Send
        gr.update(interactive=not busy),  # Regenerate
    )


def params_from_inputs(max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy) -> GenerationParams:
    seed = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
    return GenerationParams(
        max_new_tokens=int(max_new_tokens),
        greedy=bool(greedy),
        temperature=float(temperature),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
        seed=seed,
    )


def notice(e: UserError) -> gr.Error:
    return gr.Error(str(e), print_exception=False)


def make_compare(ctx: AppContext):
    def stream_turn(conv, prompt, names, settings, system, fair):
        try:
            params = params_from_inputs(*settings)
            frames = run_turn(ctx, conv, prompt, names, params, system=system or "", sequential=bool(fair))
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
                seed, greedy, fair, conv):
        """Send one prompt to both models; streams both chats, counters and metrics."""
        settings = (max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy)
        yield from stream_turn(conv, prompt, {"a": model_a, "b": model_b}, settings, system, fair)

    def regenerate(system, model_a, model_b, max_new_tokens, temperature, top_p, repetition_penalty,
                   seed, greedy, fair, conv):
        if conv.running:
            raise notice(UserError("a comparison is running; wait for it or press Stop"))
        prompt = conv.drop_last_turn()
        if prompt is None:
            raise notice(UserError("nothing to regenerate yet; send a prompt first"))
        settings = (max_new_tokens, temperature, top_p, repetition_penalty, seed, greedy)
        yield from stream_turn(conv, prompt, {"a": model_a, "b": model_b}, settings, system, fair)

    return compare, regenerate


def make_stop(ctx: AppContext):
    def stop_both(conv):
        """Stop both sides; a no-op when idle."""
        run = conv.run
        if run is not None and not run.finished.is_set():
            run.stop_all()
            run.finished.wait(STOP_GRACE_S)

    def settle(conv):
        """After Stop's cancel: show the final state and re-enable Send (idle: change nothing)."""
        run = conv.run
        if run is None:
            return tuple(gr.skip() for _ in range(12))
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
        return frame_outputs(final_frame(conv, ""), conv, busy=False, prompt_box="")

    return clear


def make_load(ctx: AppContext, side: str):
    def load(name, conv):
        """Load the picked model now (the pool shares it between sides and users)."""
        try:
            spec = ctx.spec(name, side)
        except UserError as e:
            yield heading(side, ""), f"⚠️ {e}"
            return
        conv.labels[side] = spec.label
        if ctx.pool.is_loaded(spec):
            yield heading(side, spec.label), f"{spec.label}: loaded"
            return
        yield heading(side, spec.label), f"⏳ loading {spec.label} …"
        try:
            backend = ctx.pool.get(spec)
        except UserError as e:
            yield heading(side, spec.label), f"⚠️ {spec.label}: {e}"
            return
        except Exception as e:  # shown, not raised: the other side stays usable
            yield heading(side, spec.label), f"⚠️ {spec.label} failed to load: {type(e).__name__}: {e}"
            return
        yield heading(side, spec.label), f"{spec.label}: loaded in {backend.load_seconds:.1f} s"

    return load


def make_preset(ctx: AppContext):
    def pick(index):
        if index in (None, ""):
            return gr.skip()
        return ctx.presets[int(index)].prompt

    return pick


__all__ = ["SIDES", "make_compare", "make_stop", "make_clear", "make_load", "make_preset"]
