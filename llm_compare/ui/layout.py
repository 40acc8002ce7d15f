"""The Gradio Blocks: what is on screen and which callback each control triggers.

Selectors used by tests and users' scripts are the elem_ids (chat-a, time-a, send, stop, ...).
One generator streams both panes (Gradio 6 runs two listeners on one trigger one after the
other), and Stop cancels it; its `finally` stops both model workers.
"""

from __future__ import annotations

import gradio as gr

from llm_compare.params import GenerationParams
from llm_compare.ui import batch, board, handlers
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
VOTES = (("a", "👈 A is better"), ("b", "👉 B is better"), ("tie", "🤝 Tie"), ("bothbad", "👎 Both bad"))
VOTE_IDS = {"a": "vote-a", "b": "vote-b", "tie": "vote-tie", "bothbad": "vote-bad"}
SCOPES = ["Blind votes only", "All votes"]


def vote_row(prefix: str = "") -> dict:
    with gr.Row():
        return {o: gr.Button(text, interactive=False, elem_id=f"{prefix}{VOTE_IDS[o]}") for o, text in VOTES}


def build_app(ctx: AppContext, concurrency: int = 1) -> gr.Blocks:
    defaults = GenerationParams()
    choices = ctx.choices()
    first_a = ctx.model_a or ctx.registry.default_pair[0]
    first_b = ctx.model_b or ctx.registry.default_pair[1]
    with gr.Blocks(title="llm_compare") as demo:
        conv = gr.State(lambda: Conversation())
        stored_id = gr.State(None)
        gr.Markdown("## llm_compare · two local LLMs, one prompt, side by side")
        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                model_a = gr.Dropdown(choices, value=first_a, label="Model A", elem_id="model-a", scale=2)
                model_b = gr.Dropdown(choices, value=first_b, label="Model B", elem_id="model-b", scale=2)
                with gr.Column(scale=1, min_width=200):
                    blind = gr.Checkbox(False, label="Blind mode (random hidden models)", elem_id="blind")
                    blind_pool = gr.Dropdown(ctx.registry.names(), value=ctx.available_names(), multiselect=True,
                                             label="Blind pool", visible=False, elem_id="blind-pool")
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
                        stats = gr.Markdown(format_stats(None), elem_id=f"stats-{side}", elem_classes="stats")
                        load_status = gr.Markdown(ctx.spec(picked, side).notes, elem_id=f"load-{side}",
                                                  elem_classes="stats")
                    panes[side] = dict(head=head, chat=chat, timer=timer, stop=stop_side, stats=stats,
                                       load=load_status)
            votes = vote_row()
            note = gr.Markdown("", elem_id="vote-note")
            with gr.Row():
                preset = gr.Dropdown([(f"{p.group} · {p.label}", str(i)) for i, p in enumerate(ctx.presets)],
                                     value=None, label="Preset prompt", elem_id="preset", scale=1)
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
                    seed = gr.Number(value=-1, precision=None, label="Seed (-1: random)", elem_id="seed")  # parse_seed checks it
                    greedy = gr.Checkbox(value=False, label="Greedy (deterministic)", elem_id="greedy")
                    fair = gr.Checkbox(value=False, label="Fair timing (B after A)", elem_id="fair")
                    recommended = gr.Checkbox(value=True, label="Each model's recommended sampling",
                                              elem_id="recommended",
                                              info="registry `generation` values override temperature/top-p/"
                                                   "repetition penalty for that model (e.g. Qwen-1: 1.1)")
                gr.Markdown(FAIR_NOTE)

        with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
            scope = gr.Radio(SCOPES, value=SCOPES[0], label="Count", elem_id="lb-scope")
            lb_summary = gr.Markdown("", elem_id="lb-summary")
            lb_table = gr.Dataframe(headers=board.HEADERS, interactive=False, elem_id="leaderboard", wrap=True)
            lb_plot = gr.HTML("", elem_id="ratings-plot")
            gr.Markdown("Rating: Bradley–Terry on the Elo scale (mean 1000), 95% bootstrap interval; Elo: online, "
                        "K=4. Blind votes whose answers named a model are only counted under *All votes*.")
            with gr.Accordion("Vote on stored battles (generated by Report or `python -m llm_compare report`)",
                              open=False):
                sv_next = gr.Button("Next battle", elem_id="sv-next")
                sv_note = gr.Markdown("", elem_id="sv-note")
                with gr.Row():
                    sv_heads, sv_chats = {}, {}
                    for side in "ab":
                        with gr.Column():
                            sv_heads[side] = gr.Markdown(f"**{side.upper()}**", elem_id=f"sv-head-{side}")
                            sv_chats[side] = gr.Chatbot(elem_id=f"sv-chat-{side}", show_label=False, height=320,
                                                        buttons=["copy"], sanitize_html=True)
                sv_votes = vote_row("sv-")

        with gr.Tab("Report", id="report"):
            gr.Markdown("Run a prompt group through two models, one at a time (fair timing), and get "
                        "`report.md` + `report.html`. Every pair is stored as a blind battle to vote on.")
            with gr.Row():
                suites = batch.suite_choices(ctx)
                rp_group = gr.Dropdown(suites, value=suites[0] if suites else None, label="Prompt group",
                                       elem_id="rp-group")
                rp_a = gr.Dropdown(choices, value=first_a, label="Model A", elem_id="rp-model-a")
                rp_b = gr.Dropdown(choices, value=first_b, label="Model B", elem_id="rp-model-b")
            with gr.Row():
                rp_max = gr.Slider(1, 2048, value=defaults.max_new_tokens, step=1, label="Max new tokens",
                                   elem_id="rp-max-new-tokens")
                rp_greedy = gr.Checkbox(True, label="Greedy (reproducible)", elem_id="rp-greedy")
            rp_run = gr.Button("Run report", variant="primary", elem_id="rp-run")
            rp_status = gr.Markdown("", elem_id="rp-status")
            rp_files = gr.File(label="Report files", file_count="multiple", interactive=False, elem_id="rp-files")
            rp_preview = gr.Markdown("", elem_id="rp-preview")

        # -- events ---------------------------------------------------------------------------
        a, b = panes["a"], panes["b"]
        settings = [max_new, temperature, top_p, rep, seed, greedy, fair, recommended, blind, blind_pool]
        outputs = [a["chat"], b["chat"], a["head"], b["head"], a["timer"], b["timer"], a["stats"], b["stats"],
                   status, prompt, send, regen, *votes.values(), note]
        assert len(outputs) == handlers.N_TURN_OUTPUTS
        board_outputs = [lb_table, lb_plot, lb_summary]
        quiet = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
        compare_fn, regen_fn = handlers.make_compare(ctx)
        compare_evt = gr.on(
            [send.click, prompt.submit], compare_fn,
            inputs=[prompt, system, model_a, model_b, *settings, conv], outputs=outputs,
            api_name="compare", concurrency_limit=concurrency, concurrency_id="turn", trigger_mode="once",
        )
        regen_evt = regen.click(regen_fn, inputs=[system, model_a, model_b, *settings, conv], outputs=outputs,
                                api_visibility="private", concurrency_limit=concurrency, concurrency_id="turn")
        stop_both, settle, stop_a, stop_b = handlers.make_stop(ctx)
        stop.click(stop_both, inputs=[conv], cancels=[compare_evt, regen_evt], **quiet).then(
            settle, inputs=[conv], outputs=outputs, **quiet)
        a["stop"].click(stop_a, inputs=[conv], **quiet)
        b["stop"].click(stop_b, inputs=[conv], **quiet)
        clear_fn = handlers.make_clear(ctx)
        clear.click(clear_fn, inputs=[conv], outputs=outputs, **quiet)
        for pane in (a, b):  # the pane's own trash button clears the whole conversation
            pane["chat"].clear(clear_fn, inputs=[conv], outputs=outputs, **quiet)
        preset.change(handlers.make_preset(ctx), inputs=[preset], outputs=[prompt], **quiet)
        for side, picker in (("a", model_a), ("b", model_b)):
            picker.change(handlers.make_load(ctx, side), inputs=[picker, conv],
                          outputs=[panes[side]["head"], panes[side]["load"]], api_visibility="private",
                          concurrency_id="load")
        blind.change(handlers.make_blind_toggle(ctx), inputs=[blind, model_a, model_b, conv],
                     outputs=[model_a, model_b, blind_pool, a["head"], b["head"], a["load"], b["load"], status],
                     **quiet)
        for outcome, button in votes.items():
            button.click(handlers.make_vote(ctx, outcome), inputs=[conv, scope],
                         outputs=[a["head"], b["head"], *votes.values(), note, *board_outputs], **quiet)

        def refresh_board(blind_only):
            return handlers.leaderboard_outputs(ctx, blind_only)

        for trigger in (scope.change, lb_tab.select, demo.load):
            trigger(refresh_board, inputs=[scope], outputs=board_outputs, **quiet)
        sv_outputs = [sv_chats["a"], sv_chats["b"], sv_heads["a"], sv_heads["b"], sv_note, *sv_votes.values(),
                      stored_id]
        next_battle, stored_voters = batch.make_stored(ctx)
        sv_next.click(next_battle, inputs=[stored_id], outputs=sv_outputs, **quiet)
        for outcome, button in sv_votes.items():
            button.click(stored_voters[outcome], inputs=[stored_id, scope], outputs=sv_outputs + board_outputs,
                         **quiet)
        rp_run.click(batch.make_report(ctx), inputs=[rp_group, rp_a, rp_b, rp_max, rp_greedy],
                     outputs=[rp_files, rp_preview, rp_status], api_name="report", concurrency_limit=concurrency,
                     concurrency_id="turn")
    return demo
