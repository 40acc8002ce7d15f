"""The Report tab: a preset group through two models, `report.md` + `report.html` to download.

Generate now, vote later: every pair is stored as a blind battle, which the Leaderboard tab's
"Vote on stored battles" panel offers for a vote.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import gradio as gr

from llm_compare.errors import UserError
from llm_compare.params import settings_from_input
from llm_compare.presets import groups
from llm_compare.report import run_suite, write_report
from llm_compare.report_verdict import judge_report, verdict_status
from llm_compare.ui.session import AppContext
from llm_compare.ui.widgets import initial_picks, max_new_tokens_slider, notice

INTRO = ("Run a prompt group through two models, one at a time (fair timing), and get "
         "`report.md` + `report.html`. Every pair is stored as a blind battle to vote on. With a judge, a "
         "judge model then votes on the stored battles (both answer orders) and the report gets its verdict.")
NO_JUDGE = "no judge"


def add_report_tab(ctx: AppContext, concurrency: int = 1) -> None:
    """Build and wire the tab; its run shares the turn queue (`concurrency_id="turn"`) with Compare."""
    picks = initial_picks(ctx)
    with gr.Tab("Report", id="report"):
        gr.Markdown(INTRO)
        with gr.Row():
            suites = suite_choices(ctx)
            group = gr.Dropdown(suites, value=suites[0] if suites else None, label="Prompt group",
                                elem_id="rp-group")
            model_a = gr.Dropdown(ctx.choices(), value=picks["a"], label="Model A", elem_id="rp-model-a")
            model_b = gr.Dropdown(ctx.choices(), value=picks["b"], label="Model B", elem_id="rp-model-b")
        with gr.Row():
            max_new = max_new_tokens_slider("rp-max-new-tokens")
            greedy = gr.Checkbox(True, label="Greedy (reproducible)", elem_id="rp-greedy")
            judge = gr.Dropdown([(NO_JUDGE, NO_JUDGE), *ctx.choices()], value=NO_JUDGE, label="Judge",
                                allow_custom_value=True, elem_id="rp-judge",
                                info="a registry model, model directory, .gguf or server URL; votes kept apart")
        run = gr.Button("Run report", variant="primary", elem_id="rp-run")
        status = gr.Markdown("", elem_id="rp-status")
        files = gr.File(label="Report files", file_count="multiple", interactive=False, elem_id="rp-files")
        preview = gr.Markdown("", elem_id="rp-preview")
    run.click(make_report(ctx), inputs=[group, model_a, model_b, max_new, greedy, judge], outputs=[files, preview, status],
              api_name="report", concurrency_limit=concurrency, concurrency_id="turn")


def suite_choices(ctx: AppContext) -> list[str]:
    return groups(ctx.presets)


def make_report(ctx: AppContext):
    def run_report(group, model_a, model_b, max_new_tokens, greedy, judge=NO_JUDGE, progress=gr.Progress()):
        """Run a preset group through both models (fair sequential timing), judge it if asked, write report.md/.html."""
        judged = ""
        try:
            judge_spec = None if judge in (None, "", NO_JUDGE) else ctx.registry.resolve(str(judge).strip())
            if judge_spec is not None and ctx.store is None:
                raise UserError("a judge votes on stored battles, and votes are off here (no vote database)")
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
            if judge_spec is not None:
                progress(0, desc=f"loading the judge {judge_spec.label}")

                def judging(n, total, battle, line):
                    progress(n / total, desc=f"judge {n}/{total} · {line}")

                judged = " · " + verdict_status(judge_report(report, ctx.store, ctx.pool, judge_spec, progress=judging))
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
        line += judged
        return [str(md), str(page)], md.read_text(encoding="utf-8"), line

    return run_report
