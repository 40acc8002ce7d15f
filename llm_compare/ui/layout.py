"""The Gradio Blocks: one function per tab, each building its controls and wiring their callbacks.

Selectors used by tests and users' scripts are the elem_ids (chat-a, time-a, send, stop, ...).
Callbacks return {component: value}; their inputs are picked by the callback's parameter names.
One generator streams both panes (Gradio 6 runs two listeners on one trigger one after the
other), and Stop cancels it; its `finally` stops both model workers.
"""

from __future__ import annotations

import inspect

import gradio as gr

from llm_compare.params import GenerationParams
from llm_compare.ui import arch_tab, handlers
from llm_compare.ui.handlers import CompareView, Pane
from llm_compare.ui.leaderboard_tab import BoardView, add_leaderboard_tab
from llm_compare.ui.report_tab import add_report_tab
from llm_compare.ui.session import SIDES, AppContext, Conversation, format_stats
from llm_compare.ui.widgets import heading, initial_picks, max_new_tokens_slider, vote_row

CSS = """
#chat-a, #chat-b { min-height: 380px; }
.pane-head { font-size: 1.05em; }
.counter { font-variant-numeric: tabular-nums; font-size: 1.1em; }
.stats { font-size: 0.85em; opacity: 0.85; font-variant-numeric: tabular-nums; }
"""

TITLE = "## llm_compare · two local LLMs, one prompt, side by side"
FAIR_NOTE = (
    "Concurrent runs share the CPU, so each side's tok/s is lower than alone. "
    "**Fair timing** runs B after A for comparable speed figures."
)
QUIET = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")


def build_app(ctx: AppContext, concurrency: int = 1) -> gr.Blocks:
    with gr.Blocks(title="llm_compare") as demo:
        gr.Markdown(TITLE)
        compare = add_compare_tab(ctx, concurrency)
        board = add_leaderboard_tab(ctx, demo)
        add_report_tab(ctx, concurrency)
        arch_tab.build_arch_tab(ctx, ctx.choices(), *initial_picks(ctx).values())
        wire_votes(ctx, compare, board)  # a vote on Compare moves the Leaderboard
    return demo


def inputs_for(fn, components: dict) -> list:
    """The components for `fn`'s parameters, in its order: inputs wired by name, not position."""
    return [components[name] for name, p in inspect.signature(fn).parameters.items() if p.default is p.empty]


def add_compare_tab(ctx: AppContext, concurrency: int = 1) -> CompareView:
    """Build and wire the Compare tab; returns its components (the vote wiring needs them)."""
    picks = initial_picks(ctx)
    with gr.Tab("Compare", id="compare"):
        named = {"conv": gr.State(lambda: Conversation())}
        with gr.Row():
            named |= model_pickers(ctx, picks)
        with gr.Row(equal_height=False):
            panes = {side: pane(ctx, side, picks[side]) for side in SIDES}
        with gr.Row(equal_height=True):
            named["fidelity_button"] = gr.Button("Token fidelity of B to A", size="sm", scale=0, min_width=180,
                                                 elem_id="fidelity-button")
            named["fidelity"] = gr.Markdown("", elem_id="fidelity", elem_classes="stats")
        votes = vote_row()
        named["note"] = gr.Markdown("", elem_id="vote-note")
        named |= prompt_controls(ctx)
        named["status"] = gr.Markdown("", elem_id="status")
        with gr.Accordion("System prompt and generation settings (shared by both sides)", open=False):
            named |= settings_controls()
    view = CompareView(
        pickers={"a": named["model_a"], "b": named["model_b"]}, blind=named["blind"], blind_pool=named["blind_pool"],
        panes=panes, votes=votes, note=named["note"], prompt=named["prompt"], send=named["send"],
        regen=named["regen"], status=named["status"], conv=named["conv"])
    wire_compare(ctx, view, named, concurrency)
    return view


def model_pickers(ctx: AppContext, picks: dict) -> dict:
    choices = ctx.choices()
    model_a = gr.Dropdown(choices, value=picks["a"], label="Model A", elem_id="model-a", scale=2)
    model_b = gr.Dropdown(choices, value=picks["b"], label="Model B", elem_id="model-b", scale=2)
    with gr.Column(scale=1, min_width=200):
        blind = gr.Checkbox(False, label="Blind mode (random hidden models)", elem_id="blind")
        blind_pool = gr.Dropdown(ctx.registry.names(), value=ctx.available_names(), multiselect=True,
                                 label="Blind pool", visible=False, elem_id="blind-pool")
    return {"model_a": model_a, "model_b": model_b, "blind": blind, "blind_pool": blind_pool}


def pane(ctx: AppContext, side: str, picked: str) -> Pane:
    spec = ctx.spec(picked, side)
    with gr.Column():
        head = gr.Markdown(heading(side, spec.label), elem_id=f"head-{side}", elem_classes="pane-head")
        chat = gr.Chatbot(elem_id=f"chat-{side}", show_label=False, height=420,
                          buttons=["copy"], sanitize_html=True, render_markdown=True)
        with gr.Row():
            timer = gr.Markdown("⏱ –", elem_id=f"time-{side}", elem_classes="counter")
            stop = gr.Button(f"Stop {side.upper()}", elem_id=f"stop-{side}",
                             size="sm", variant="secondary", scale=0, min_width=90)
        stats = gr.Markdown(format_stats(None), elem_id=f"stats-{side}", elem_classes="stats")
        load = gr.Markdown(spec.notes, elem_id=f"load-{side}", elem_classes="stats")
    return Pane(head=head, chat=chat, timer=timer, stop=stop, stats=stats, load=load)


def prompt_controls(ctx: AppContext) -> dict:
    with gr.Row():
        preset = gr.Dropdown([(f"{p.group} · {p.label}", str(i)) for i, p in enumerate(ctx.presets)],
                             value=None, label="Preset prompt", elem_id="preset", scale=1)
        prompt = gr.Textbox(label="Prompt (Enter sends, Shift+Enter: new line)", lines=1, max_lines=12,
                            elem_id="prompt", scale=3, placeholder="Ask both models …")
    with gr.Row():
        buttons = {"send": gr.Button("Send", variant="primary", elem_id="send"),
                   "stop": gr.Button("Stop both", variant="stop", elem_id="stop"),
                   "regen": gr.Button("Regenerate", elem_id="regenerate"),
                   "clear": gr.Button("Clear", elem_id="clear")}
    return {"preset": preset, "prompt": prompt, **buttons}


def settings_controls() -> dict:
    """The shared settings; keys are the turn callbacks' parameter names."""
    defaults = GenerationParams()
    system = gr.Textbox(label="System prompt", lines=2, elem_id="system")
    with gr.Row():
        sliders = {
            "max_new_tokens": max_new_tokens_slider("max-new-tokens", defaults.max_new_tokens),
            "temperature": gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature"),
            "top_p": gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p"),
        }
    with gr.Row():
        sliders["repetition_penalty"] = gr.Slider(0.8, 2.0, value=defaults.repetition_penalty, step=0.05,
                                                  label="Repetition penalty")
        checks = {
            "seed": gr.Number(value=-1, precision=None, label="Seed (-1: random)", elem_id="seed"),  # parse_seed checks it
            "greedy": gr.Checkbox(value=False, label="Greedy (deterministic)", elem_id="greedy"),
            "fair": gr.Checkbox(value=False, label="Fair timing (B after A)", elem_id="fair"),
            "recommended": gr.Checkbox(value=True, label="Each model's recommended sampling", elem_id="recommended",
                                       info="registry `generation` values override temperature/top-p/"
                                            "repetition penalty for that model (e.g. Qwen-1: 1.1)"),
        }
    gr.Markdown(FAIR_NOTE)
    return {"system": system, **sliders, **checks}


def wire_compare(ctx: AppContext, view: CompareView, named: dict, concurrency: int) -> None:
    """The Compare tab's events (`named`: every control by the callbacks' parameter names).
    Send and Regenerate share one queue (`turn`) with the Report tab."""
    outputs, conv = view.turn_outputs, [view.conv]
    compare_fn, regen_fn = handlers.make_compare(ctx, view)
    compare_evt = gr.on(
        [view.send.click, view.prompt.submit], compare_fn, inputs=inputs_for(compare_fn, named), outputs=outputs,
        api_name="compare", concurrency_limit=concurrency, concurrency_id="turn", trigger_mode="once",
    )
    regen_evt = view.regen.click(regen_fn, inputs=inputs_for(regen_fn, named), outputs=outputs,
                                 api_visibility="private", concurrency_limit=concurrency, concurrency_id="turn")
    stop_both, settle, stop_a, stop_b = handlers.make_stop(ctx, view)
    named["stop"].click(stop_both, inputs=conv, cancels=[compare_evt, regen_evt], **QUIET).then(
        settle, inputs=conv, outputs=outputs, **QUIET)
    view.panes["a"].stop.click(stop_a, inputs=conv, **QUIET)
    view.panes["b"].stop.click(stop_b, inputs=conv, **QUIET)
    clear_fn = handlers.make_clear(ctx, view)
    for trigger in (named["clear"].click, *(p.chat.clear for p in view.panes.values())):  # a pane's trash: all
        trigger(clear_fn, inputs=conv, outputs=outputs, **QUIET)
    named["fidelity_button"].click(handlers.make_fidelity(ctx), inputs=conv, outputs=named["fidelity"],
                                   api_visibility="private", concurrency_id="turn")
    for evt in (compare_evt, regen_evt):  # a new answer: the line measured the one before
        evt.then(lambda: "", outputs=named["fidelity"], **QUIET)
    named["preset"].change(handlers.make_preset(ctx), inputs=[named["preset"]], outputs=[view.prompt], **QUIET)
    for side, picker in view.pickers.items():
        picker.change(handlers.make_load(ctx, side), inputs=[picker, view.conv],
                      outputs=[view.panes[side].head, view.panes[side].load], api_visibility="private",
                      concurrency_id="load")
    toggle = handlers.make_blind_toggle(ctx, view)
    named["blind"].change(toggle, inputs=inputs_for(toggle, named),
                          outputs=[*view.pickers.values(), view.blind_pool, view.status,
                                   *(c for p in view.panes.values() for c in (p.head, p.load))], **QUIET)


def wire_votes(ctx: AppContext, view: CompareView, board: BoardView) -> None:
    """The Compare tab's vote buttons: they save the vote, reveal blind names and refresh the board."""
    outputs = [*(p.head for p in view.panes.values()), *view.votes.values(), view.note, *board.outputs]
    for outcome, button in view.votes.items():
        button.click(handlers.make_vote(ctx, view, board, outcome), inputs=[view.conv, *board.inputs],
                     outputs=outputs, **QUIET)
