"""The Gradio Blocks: what is on screen and which callback each control triggers.

Selectors used by tests and users' scripts are the elem_ids (chat-a, time-a, send, stop, ...).
One generator streams both panes (Gradio 6 runs two listeners on one trigger one after the
other), and Stop cancels it; its `finally` stops both model workers.
"""

from __future__ import annotations

import gradio as gr

from llm_compare.params import GenerationParams
from llm_compare.ui import handlers
from llm_compare.ui.session import AppContext, Conversation, format_stats

CSS = """
#chat-a, #chat-b { min-height: 380px; }
.pane-head { font-size: 1.05em; }
.counter { font-variant-numeric: tabular-nums; font-size: 1.1em; }
.stats { font-size: 0.85em; opacity: 0.85; font-variant-numeric: tabular-nums; }
"""

FAIR_NOTE = (
    "Concurrent runs share the CPU, so each side's tok/s is lower than alone. "
    "**Fair timing** runs B after A for comparable speed figures."
)


def build_app(ctx: AppContext, concurrency: int = 1) -> gr.Blocks:
    defaults = GenerationParams()
    choices = ctx.choices()
    first_a = ctx.model_a or ctx.registry.default_pair[0]
    first_b = ctx.model_b or ctx.registry.default_pair[1]
    with gr.Blocks(title="llm_compare") as demo:
        conv = gr.State(lambda: Conversation())
        gr.Markdown("## llm_compare · two local LLMs, one prompt, side by side")
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                model_a = gr.Dropdown(choices, value=first_a, label="Model A", elem_id="model-a", scale=1)
                model_b = gr.Dropdown(choices, value=first_b, label="Model B", elem_id="model-b", scale=1)
            with gr.Row(equal_height=False):
                panes = {}
                for side, picked in (("a", first_a), ("b", first_b)):
                    with gr.Column():
                        head = gr.Markdown(handlers.heading(side, ctx.spec(picked, side).label),
                                           elem_id=f"head-{side}", elem_classes="pane-head")
                        chat = gr.Chatbot(elem_id=f"chat-{side}", show_label=False, height=420,
                                          buttons=["copy"], sanitize_html=True, render_markdown=True)
                        with gr.Row():
                            timer = gr.Markdown("⏱ –", elem_id=f"time-{side}", elem_classes="counter")
                            stop_side = gr.Button(f"Stop {side.upper()}", elem_id=f"stop-{side}",
                                                  size="sm", variant="secondary", scale=0, min_width=90)
                        stats = gr.Markdown(format_stats(None), elem_id=f"stats-{side}",
                                            elem_classes="stats")
                        load_status = gr.Markdown("", elem_id=f"load-{side}", elem_classes="stats")
                    panes[side] = dict(head=head, chat=chat, timer=timer, stop=stop_side, stats=stats,
                                       load=load_status)
            with gr.Row():
                preset = gr.Dropdown([(p.name, str(i)) for i, p in enumerate(ctx.presets)], value=None,
                                     label="Preset prompt", elem_id="preset", scale=1)
                prompt = gr.Textbox(label="Prompt (Enter sends, Shift+Enter: new line)", lines=1, max_lines=12,
                                    elem_id="prompt", scale=3, placeholder="Ask both models …")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                stop = gr.Button("Stop both", variant="stop", elem_id="stop")
                regen = gr.Button("Regenerate", elem_id="regenerate")
                clear = gr.Button("Clear", elem_id="clear")
            status = gr.Markdown("", elem_id="status")
            with gr.Accordion("System prompt and generation settings (shared by both sides)", open=False):
                system = gr.Textbox(label="System prompt", lines=2, elem_id="system")
                with gr.Row():
                    max_new = gr.Slider(1, 2048, value=defaults.max_new_tokens, step=1, label="Max new tokens",
                                        elem_id="max-new-tokens")
                    temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
                with gr.Row():
                    rep = gr.Slider(0.8, 2.0, value=defaults.repetition_penalty, step=0.05,
                                    label="Repetition penalty")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="seed")
                    greedy = gr.Checkbox(value=False, label="Greedy (deterministic)", elem_id="greedy")
                    fair = gr.Checkbox(value=False, label="Fair timing (B after A)", elem_id="fair")
                gr.Markdown(FAIR_NOTE)

        a, b = panes["a"], panes["b"]
        settings = [max_new, temperature, top_p, rep, seed, greedy, fair]
        outputs = [a["chat"], b["chat"], a["head"], b["head"], a["timer"], b["timer"], a["stats"], b["stats"],
                   status, prompt, send, regen]
        compare_fn, regen_fn = handlers.make_compare(ctx)
        compare_evt = gr.on(
            [send.click, prompt.submit], compare_fn,
            inputs=[prompt, system, model_a, model_b, *settings, conv], outputs=outputs,
            api_name="compare", concurrency_limit=concurrency, concurrency_id="turn", trigger_mode="once",
        )
        regen_evt = regen.click(regen_fn, inputs=[system, model_a, model_b, *settings, conv], outputs=outputs,
                                api_visibility="private", concurrency_limit=concurrency, concurrency_id="turn")
        stop_both, settle, stop_a, stop_b = handlers.make_stop(ctx)
        stop.click(stop_both, inputs=[conv], cancels=[compare_evt, regen_evt], concurrency_limit=None,
                   api_visibility="private").then(settle, inputs=[conv], outputs=outputs, concurrency_limit=None,
                                                  api_visibility="private")
        a["stop"].click(stop_a, inputs=[conv], concurrency_limit=None, api_visibility="private")
        b["stop"].click(stop_b, inputs=[conv], concurrency_limit=None, api_visibility="private")
        clear.click(handlers.make_clear(ctx), inputs=[conv], outputs=outputs, concurrency_limit=None,
                    api_visibility="private")
        for pane in (a, b):  # the pane's own trash button clears the whole conversation
            pane["chat"].clear(handlers.make_clear(ctx), inputs=[conv], outputs=outputs, concurrency_limit=None,
                               api_visibility="private")
        preset.change(handlers.make_preset(ctx), inputs=[preset], outputs=[prompt], api_visibility="private",
                      concurrency_limit=None)
        for side, picker in (("a", model_a), ("b", model_b)):
            picker.change(handlers.make_load(ctx, side), inputs=[picker, conv],
                          outputs=[panes[side]["head"], panes[side]["load"]], api_visibility="private",
                          concurrency_id="load")
    return demo
