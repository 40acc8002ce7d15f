"""The Leaderboard tab's style control, categories, voter picker and votes still needed, in Chromium.

The app runs on a prepared vote database (human votes, a judge's verdicts, Chinese and English
prompts from two report suites); nothing is generated, so this stays quick.
"""

from __future__ import annotations

import pytest

from conftest import start_app
from test_ui_browser import page  # noqa: F401  (the Chromium page, on this module's app_url)
from test_verdict import stored

pytestmark = pytest.mark.browser

EVIL_JUDGE = "<b>evil</b>"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from llm_compare.store import VoteStore

    work = tmp_path_factory.mktemp("verdict-app")
    path = stored(work)
    with VoteStore(path) as store:
        for battle in store.battles():
            store.record_judge_vote(battle.id, "b", EVIL_JUDGE)
    with start_app(["--db", str(path)], work) as url:
        yield url


def pick(page, elem_id: str, choice: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=choice, exact=True).click()


def test_leaderboard_tab_shows_style_control_categories_and_judges(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Leaderboard").click()
    summary, table, details = page.locator("#lb-summary"), page.locator("#leaderboard"), page.locator("#lb-details")
    expect(summary).to_contain_text("60 rated battles (human votes")
    expect(table).to_contain_text("Style-controlled")
    expect(table).to_contain_text("To the next model")
    expect(table).to_contain_text("separated")
    expect(details).to_contain_text("Style coefficients")
    expect(details).to_contain_text("length:")
    expect(details).to_contain_text(f"judge {EVIL_JUDGE}: agrees with the human vote")  # shown as text
    expect(page.locator("#lb-details b", has_text="evil")).to_have_count(0)  # never as markup

    pick(page, "lb-category", "language:Chinese")
    expect(summary).to_contain_text("20 rated battles")
    expect(summary).to_contain_text("category language:Chinese")
    pick(page, "lb-category", "group:en-suite")
    expect(summary).to_contain_text("40 rated battles")

    pick(page, "lb-voters", f"judge:{EVIL_JUDGE}")
    expect(summary).to_contain_text(f"judge:{EVIL_JUDGE}")
    expect(summary).to_contain_text("40 rated battles")  # the category stays picked
    pick(page, "lb-category", "all")
    expect(summary).to_contain_text("60 rated battles")
    expect(page.locator("#lb-summary b", has_text="evil")).to_have_count(0)
