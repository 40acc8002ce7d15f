"""One rule for the settings stored with a battle (arena.stored_settings): the app's turn and the batch
report store the same settings for the same models and inputs. Scripted models (tests/scripted.py):
what is checked is the bookkeeping, not what a model says."""

from __future__ import annotations

import dataclasses
import random

import pytest

from llm_compare.params import GenerationParams
from llm_compare.presets import Preset
from llm_compare.report import run_suite
from llm_compare.store import VoteStore
from llm_compare.ui.session import AppContext, Conversation, run_turn
from scripted import ScriptedPool, scripted_registry, scripted_spec

SHARED = GenerationParams(max_new_tokens=6, greedy=False, temperature=0.7, top_p=0.9, seed=3)
PLAIN = scripted_spec("plain")  # recommends nothing
COOL = scripted_spec("cool", generation={"temperature": 0.2})
ALSO_COOL = scripted_spec("also-cool", generation={"temperature": 0.2})
WARM = scripted_spec("warm", generation={"temperature": 1.1, "top_p": 0.5})

CASES = [  # (A, B, recommended, the settings stored: written out by hand)
    (PLAIN, WARM, False, SHARED.to_dict()),
    (PLAIN, PLAIN, True, SHARED.to_dict()),
    (COOL, ALSO_COOL, True, dict(SHARED.to_dict(), temperature=0.2)),  # both ran with the same: one set
    (PLAIN, WARM, True, {"plain": SHARED.to_dict(), "warm": dict(SHARED.to_dict(), temperature=1.1, top_p=0.5)}),
    (COOL, WARM, True, {"cool": dict(SHARED.to_dict(), temperature=0.2),
                        "warm": dict(SHARED.to_dict(), temperature=1.1, top_p=0.5)}),
]


@pytest.fixture
def store(tmp_path):
    s = VoteStore(tmp_path / "votes.db")
    yield s
    s.close()


def stored_by_the_app(store, spec_a, spec_b, recommended) -> dict:
    ctx = AppContext(registry=scripted_registry(PLAIN, COOL, ALSO_COOL, WARM), pool=ScriptedPool(), store=store)
    conv = Conversation()
    list(run_turn(ctx, conv, "Say hi.", {"a": spec_a.name, "b": spec_b.name}, SHARED, recommended=recommended))
    assert conv.battle_id is not None, conv.note
    return store.get_battle(conv.battle_id).params


def stored_by_the_report(store, spec_a, spec_b, recommended) -> dict:
    report = run_suite([Preset("test", "hi", "Say hi.")], spec_a, spec_b, SHARED, ScriptedPool(), store=store,
                       recommended=recommended, rng=random.Random(0))
    assert report.results[0].battle_id is not None, report.store_error
    return store.get_battle(report.results[0].battle_id).params


@pytest.mark.parametrize("spec_a, spec_b, recommended, expected", CASES,
                         ids=lambda v: v.name if hasattr(v, "name") else None)
def test_the_app_and_the_report_store_the_same_settings(store, spec_a, spec_b, recommended, expected):
    assert stored_by_the_app(store, spec_a, spec_b, recommended) == expected
    assert stored_by_the_report(store, spec_a, spec_b, recommended) == expected


def test_a_side_without_its_own_settings_ran_with_the_shared_ones():
    from llm_compare.arena import stored_settings
    from llm_compare.engine import SideState

    ran = SHARED.replace(temperature=0.2)
    a, b = SideState("a", "A", params=None), SideState("b", "B", params=ran)
    assert stored_settings(SHARED, PLAIN, a, COOL, b) == {"plain": SHARED.to_dict(), "cool": ran.to_dict()}
    assert stored_settings(ran, PLAIN, a, COOL, b) == ran
    assert stored_settings(SHARED, PLAIN, dataclasses.replace(a, params=SHARED), COOL, a) == SHARED
