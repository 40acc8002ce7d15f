"""The Blocks without a browser: the named endpoints' order, and callbacks wired by name."""

from __future__ import annotations

from collections import Counter

import gradio as gr
import pytest

from llm_compare.pool import ModelPool
from llm_compare.presets import load_presets
from llm_compare.specs import load_registry
from llm_compare.ui import handlers
from llm_compare.ui.layout import add_compare_tab, build_app
from llm_compare.ui.session import AppContext, Conversation, final_frame

# gradio_client users read `/compare` results by position (README, tests/test_ui_remote.py)
COMPARE_OUTPUTS = ["chat-a", "chat-b", "head-a", "head-b", "time-a", "time-b", "stats-a", "stats-b", "status",
                   "prompt", "send", "regenerate", "vote-a", "vote-b", "vote-tie", "vote-bad", "vote-note"]


@pytest.fixture(scope="module")
def ctx():
    return AppContext(registry=load_registry(), pool=ModelPool(), presets=load_presets())


def endpoint(demo, name):
    return next(f for f in demo.fns.values() if f.api_name == name)


def test_named_endpoints_keep_their_order(ctx):
    demo = build_app(ctx)
    compare = endpoint(demo, "compare")
    assert [c.elem_id for c in compare.outputs] == COMPARE_OUTPUTS
    # inputs follow the callback's parameters: prompt, system, the pickers, the settings, the session
    assert [c.elem_id or c.label for c in compare.inputs[:-1]] == [
        "prompt", "system", "model-a", "model-b", "max-new-tokens", "Temperature", "Top-p", "Repetition penalty",
        "seed", "greedy", "fair", "recommended", "blind", "blind-pool"]
    assert isinstance(compare.inputs[-1], gr.State)
    report = endpoint(demo, "report")
    assert [c.elem_id for c in report.outputs] == ["rp-files", "rp-preview", "rp-status"]


def test_elem_ids_are_unique(ctx):
    ids = Counter(b.elem_id for b in build_app(ctx).blocks.values() if getattr(b, "elem_id", None))
    assert [i for i, n in ids.items() if n > 1] == []


def test_a_turn_update_names_every_turn_output_and_nothing_else(ctx):
    with gr.Blocks():
        view = add_compare_tab(ctx)
    conv = Conversation()
    update = handlers.frame_outputs(view, final_frame(conv, "done"), conv, busy=False)
    assert set(update) == set(view.turn_outputs)
    assert update[view.status] == "done" and update[view.panes["a"].timer] == "⏱ –"
