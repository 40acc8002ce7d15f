"""What more than one tab shows: a pane's heading, the row of four vote buttons, the max-new-tokens slider."""

from __future__ import annotations

import gradio as gr

from llm_compare.params import GenerationParams
from llm_compare.specs import CONTEXT_TOKENS

VOTES = (("a", "👈 A is better"), ("b", "👉 B is better"), ("tie", "🤝 Tie"), ("bothbad", "👎 Both bad"))
VOTE_IDS = {"a": "vote-a", "b": "vote-b", "tie": "vote-tie", "bothbad": "vote-bad"}
OUTCOME_WORDS = {"a": "A is better", "b": "B is better", "tie": "Tie", "bothbad": "Both bad"}


def initial_picks(ctx) -> dict:
    """side -> the model the pickers start on: the flag's, else the registry's default pair."""
    return {"a": ctx.model_a or ctx.registry.default_pair[0], "b": ctx.model_b or ctx.registry.default_pair[1]}


def heading(side: str, label: str) -> str:
    return f"**{side.upper()}** · {label}" if label else f"**{side.upper()}**"


def vote_row(prefix: str = "") -> dict:
    """{outcome: Button}, disabled until there is something to vote on; elem_ids `{prefix}vote-a` etc."""
    with gr.Row():
        return {o: gr.Button(text, interactive=False, elem_id=f"{prefix}{VOTE_IDS[o]}") for o, text in VOTES}


def vote_buttons(buttons: dict, enabled: bool) -> dict:
    """{button: update} enabling or disabling every button of a `vote_row`."""
    return {button: gr.update(interactive=enabled) for button in buttons.values()}


def notice(e: Exception | str) -> gr.Error:
    """A UserError about the whole request, as a Gradio notice (no traceback in the log)."""
    return gr.Error(str(e), print_exception=False)


def max_new_tokens_slider(elem_id: str, value: int | None = None) -> gr.Slider:
    """Up to the default context: a longer reply than that is bounded by the context anyway."""
    value = GenerationParams().max_new_tokens if value is None else value
    return gr.Slider(1, CONTEXT_TOKENS, value=value, step=1, label="Max new tokens", elem_id=elem_id)
