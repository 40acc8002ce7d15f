"""The Architecture tab: two pickers and the side-by-side architecture table, differences marked.

Facts come from `architecture.describe_many` (config, tokenizer, GGUF header; never weights) and
are kept per source for the life of the process: they only change when the files do, and the
memory-bandwidth probe behind the decode ceiling is cached per machine anyway.
"""

from __future__ import annotations

import gradio as gr

from llm_compare.architecture import describe_many
from llm_compare.architecture.table import CSS, render_html
from llm_compare.errors import UserError
from llm_compare.ui.session import AppContext

INTRO = ("Everything below is read from each model's `config.json`, tokenizer files or GGUF header — no "
         "weights are loaded. Rows marked **≠** (highlighted) differ. *not stated*: the files do not say; "
         "*unknown*: nothing was read that could say it.")


def make_compare(ctx: AppContext):
    known: dict[tuple, dict] = {}

    def compare_architectures(name_a, name_b):
        """Yield a status line first (a GGUF tokenizer can take seconds), then the table."""
        try:
            specs = [ctx.spec(name_a, "a"), ctx.spec(name_b, "b")]
        except UserError as e:
            yield gr.update(), f"⚠️ {e}"
            return
        keys = [(s.source, s.backend) for s in specs]
        fresh, problems = {}, []
        if any(k not in known for k in keys):
            yield gr.update(), "Reading configs and tokenizers …"
            for key, spec, facts in zip(keys, specs, describe_many(specs)):
                fresh[key] = facts
                if "error" in facts:
                    problems.append(f"⚠️ {spec.label}: {facts['error']}")
                else:
                    known[key] = facts
        # labels as picked: one source's facts are shared by its specs (bf16 / fp32 of one file)
        facts = [dict(known.get(k) or fresh[k], name=s.name, label=s.label) for k, s in zip(keys, specs)]
        yield f"<style>{CSS}</style>{render_html(facts)}", "  \n".join(problems)

    return compare_architectures


def build_arch_tab(ctx: AppContext, choices: list, first_a: str, first_b: str) -> None:
    """The tab and its events, inside the caller's Blocks."""
    with gr.Tab("Architecture", id="architecture") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            pick_a = gr.Dropdown(choices, value=first_a, label="Model A", elem_id="arch-model-a")
            pick_b = gr.Dropdown(choices, value=first_b, label="Model B", elem_id="arch-model-b")
        run = gr.Button("Compare architectures", variant="primary", elem_id="arch-run")
        status = gr.Markdown("", elem_id="arch-status")
        table = gr.HTML("", elem_id="arch-table")
    compare = make_compare(ctx)  # its own function name: Gradio names endpoints after functions
    quiet = dict(api_visibility="private", show_progress="hidden", concurrency_id="arch")
    for trigger in (run.click, tab.select):
        trigger(compare, inputs=[pick_a, pick_b], outputs=[table, status], **quiet)
