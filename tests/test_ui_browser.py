"""The real app in a subprocess, driven by headless Chromium and by gradio_client.

Runs on the embedded default pair (SmolLM2 bf16 vs fp32); the converted weights are cached in the
test session's own cache folder (conftest.session_cache), so each run pays the conversion once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from conftest import start_app

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
TURN_TIMEOUT_MS = 240_000  # a loaded 2-core box; only a guard, never an assertion

pytestmark = pytest.mark.browser  # in the default run: CI installs Chromium (.ci/run)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    work = tmp_path_factory.mktemp("app")
    with start_app(["--db", str(work / "votes.db")], work) as url:
        yield url


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url)
        from playwright.sync_api import expect

        expect(page.locator("#send")).to_be_enabled(timeout=60_000)  # hydrated: typed values stay
        yield page
        browser.close()


def seconds(page, side) -> float:
    return float(re.search(r"⏱ ([\d.]+) s", page.locator(f"#time-{side}").inner_text()).group(1))


def set_max_new_tokens(page, n: int) -> None:
    from playwright.sync_api import expect

    box = page.locator("#max-new-tokens input[type=number]")
    if not box.is_visible():
        page.get_by_text("System prompt and generation settings").click()
    for _ in range(3):  # setup, not an assertion: a late re-render can reset a freshly typed value
        box.fill(str(n))
        box.press("Enter")
        if box.input_value() == str(n):
            break
        page.wait_for_timeout(300)
    expect(box).to_have_value(str(n))


def wait_both(page, pattern: str) -> None:
    from playwright.sync_api import expect

    for side in "ab":
        expect(page.locator(f"#time-{side}")).to_contain_text(re.compile(pattern), timeout=TURN_TIMEOUT_MS)


def watch_counters(page) -> None:
    """Record every distinct text the counters show (a MutationObserver in the page)."""
    page.evaluate("""() => {
      window.__ticks = {a: new Set(), b: new Set()};
      for (const s of ['a', 'b']) {
        const el = document.querySelector('#time-' + s);
        new MutationObserver(() => window.__ticks[s].add(el.innerText)).observe(el, {subtree: true, childList: true, characterData: true});
      }
    }""")


def test_compare_two_turns_then_stop_both(page):
    from playwright.sync_api import expect

    set_max_new_tokens(page, 24)
    page.locator("#preset input").click()
    page.get_by_role("option", name="他知道我知道你知道").click()
    expect(page.locator("#prompt textarea")).to_have_value("他知道我知道你知道他不知道吗？这句话里，到底谁不知道")
    watch_counters(page)
    page.locator("#send").click()
    wait_both(page, "done")
    for side in "ab":
        expect(page.locator(f"#chat-{side} [data-testid='bot']")).to_have_count(1)
        expect(page.locator(f"#chat-{side} [data-testid='bot']").first).not_to_have_text("")
        expect(page.locator(f"#stats-{side}")).to_contain_text(re.compile(r"[1-9]\d* new tokens"))
        running = page.evaluate(f"[...window.__ticks.{side}].filter(t => t.includes('running')).length")
        assert running >= 3  # the counter ticked while the answer streamed
    frozen = {s: seconds(page, s) for s in "ab"}
    page.wait_for_timeout(700)  # let time pass; the finished counters must not move
    assert {s: seconds(page, s) for s in "ab"} == frozen and all(v > 0 for v in frozen.values())

    set_max_new_tokens(page, 48)
    page.locator("#greedy input").check()
    page.locator("#prompt textarea").fill("What is the capital of France? Answer in one sentence.")
    page.locator("#prompt textarea").press("Enter")
    for side in "ab":
        expect(page.locator(f"#chat-{side} [data-testid='bot']")).to_have_count(2)
    wait_both(page, "done")
    expect(page.locator("#send")).to_be_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
    page.get_by_text("System prompt and generation settings").click()  # fold the settings for the README shot
    page.evaluate("window.scrollTo(0, 0)")
    # The README's picture: refreshed only on request, so test runs leave the repo clean.
    readme_shot = ARTIFACTS / "screenshot.png"
    if os.environ.get("UPDATE_SCREENSHOT"):
        readme_shot = ROOT / "assets" / "screenshot.png"
    page.screenshot(path=str(readme_shot), full_page=False)
    page.get_by_text("System prompt and generation settings").click()
    page.locator("#greedy input").uncheck()

    set_max_new_tokens(page, 1500)
    page.locator("#prompt textarea").fill("Write a very long story about a dragon who learns to cook.")
    page.locator("#send").click()
    for side in "ab":
        expect(page.locator(f"#time-{side}")).to_contain_text("running", timeout=TURN_TIMEOUT_MS)
        expect(page.locator(f"#stats-{side}")).to_contain_text(re.compile(r"[1-9]\d* new tokens"),
                                                               timeout=TURN_TIMEOUT_MS)
    expect(page.locator("#send")).to_be_disabled()  # no second overlapping run on the same panes
    page.locator("#prompt textarea").press("Enter")
    page.locator("#stop-a").click()  # one side first: A stops, B keeps going
    expect(page.locator("#time-a")).to_contain_text("stopped")
    expect(page.locator("#time-b")).to_contain_text("running")
    page.locator("#stop").click()
    wait_both(page, "stopped")
    expect(page.locator("#send")).to_be_enabled()
    for side in "ab":
        tokens = int(re.search(r"(\d+) new tokens", page.locator(f"#stats-{side}").inner_text()).group(1))
        assert 0 < tokens < 1500
        expect(page.locator(f"#chat-{side} [data-testid='bot']").last).to_contain_text("[stopped]")


def test_html_in_chat_is_sanitised_and_empty_prompt_is_refused(page):
    from playwright.sync_api import expect

    set_max_new_tokens(page, 4)
    page.locator("#send").click()  # empty prompt: a notice, no turn
    expect(page.get_by_text("the prompt is empty")).to_be_visible()
    expect(page.locator("#chat-a [data-testid='bot']")).to_have_count(0)

    evil = 'Repeat: <img src="x" onerror="window.__xss=1"> **bold** <script>window.__xss=2</script>'
    page.locator("#prompt textarea").fill(evil)
    page.locator("#send").click()
    wait_both(page, "done|error")
    expect(page.locator("#chat-a [data-testid='user']")).to_contain_text("bold")
    expect(page.locator("#send")).to_be_enabled()  # the turn's last frame has arrived
    bot = page.locator("#chat-a [data-testid='bot']")
    before = bot.last.inner_text()
    page.locator("#stop").click()  # Stop when idle: nothing changes
    expect(page.locator("#time-a")).to_contain_text(re.compile("done|error"))
    expect(bot).to_have_count(1)
    expect(bot.last).to_have_text(before)
    expect(page.locator("#send")).to_be_enabled()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#chat-a img[onerror], #chat-b img[onerror], #chat-a script, #chat-b script").count() == 0

    page.locator("#regenerate").click()  # the last turn again: replaced, not appended
    expect(page.locator("#time-a")).to_contain_text("running")
    wait_both(page, "done|error")
    expect(page.locator("#chat-a [data-testid='bot']")).to_have_count(1)
    page.locator("#clear").click()
    for side in "ab":
        expect(page.locator(f"#chat-{side} [data-testid='bot']")).to_have_count(0)


def test_named_endpoint_from_gradio_client(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    result = client.predict("Say hello.", system="", max_new_tokens=8, greedy=True, api_name="/compare")
    chat_a, chat_b, head_a, head_b, time_a, time_b = result[:6]
    for chat, timer in ((chat_a, time_a), (chat_b, time_b)):
        assert [m["role"] for m in chat] == ["user", "assistant"]
        assert "done" in timer
        text = chat[1]["content"]
        text = text if isinstance(text, str) else " ".join(b.get("text", "") for b in text)
        assert text.strip()
    assert "bf16" in head_a and "fp32" in head_b


def rated(page) -> int:
    return int(re.search(r"(\d+) rated battles", page.locator("#lb-summary").inner_text()).group(1))


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def finish_turn(page, prompt: str) -> None:
    from playwright.sync_api import expect

    page.locator("#prompt textarea").fill(prompt)
    page.locator("#send").click()
    wait_both(page, "done|error")
    for side in "ab":  # an error is a failure; show the pane's own message
        if "error" in page.locator(f"#time-{side}").inner_text():
            pytest.fail(f"side {side} errored: {page.locator(f'#chat-{side}').inner_text()[-500:]}")
    # the note comes with the turn's last update, after the battle is stored: on a busy machine that
    # can trail the panes' "done" by more than Playwright's default 5 s
    expect(page.locator("#vote-note")).to_contain_text("Which answer is better?", timeout=60_000)


def test_vote_in_normal_then_blind_mode_reveals_names_and_moves_the_leaderboard(page):
    from playwright.sync_api import expect

    open_tab(page, "Leaderboard")
    page.get_by_label("All votes").check()
    expect(page.locator("#lb-summary")).to_contain_text("all votes", timeout=60_000)  # queued on a busy box
    before = rated(page)
    open_tab(page, "Compare")
    set_max_new_tokens(page, 8)
    for button in ("a", "b", "tie", "bad"):
        expect(page.locator(f"#vote-{button}")).to_be_disabled()  # nothing finished yet
    finish_turn(page, "What is two plus two?")
    page.locator("#vote-a").click()
    expect(page.locator("#vote-note")).to_contain_text("Vote saved: A is better")
    expect(page.locator("#vote-b")).to_be_disabled()  # one vote per battle
    open_tab(page, "Leaderboard")
    expect(page.locator("#lb-summary")).to_contain_text(f"{before + 1} rated battles")
    expect(page.locator("#leaderboard")).to_contain_text("SmolLM2-135M-Instruct · bf16")
    expect(page.locator("#ratings-plot circle")).to_have_count(2)

    open_tab(page, "Compare")
    page.locator("#blind input").check()
    expect(page.locator("#model-a input")).to_be_disabled()
    finish_turn(page, "Name one fruit.")
    for side in "ab":
        expect(page.locator(f"#head-{side}")).to_have_text(f"{side.upper()} · Model {side.upper()}")
    page.locator("#vote-tie").click()
    expect(page.locator("#vote-note")).to_contain_text("Vote saved: Tie")
    expect(page.locator("#vote-note")).to_contain_text(re.compile(r"A was SmolLM2.*B was SmolLM2"))
    for side in "ab":
        expect(page.locator(f"#head-{side}")).to_contain_text("SmolLM2-135M-Instruct")
    open_tab(page, "Leaderboard")
    expect(page.locator("#lb-summary")).to_contain_text(f"{before + 2} rated battles")
    page.get_by_label("Blind votes only").check()
    expect(page.locator("#lb-summary")).to_contain_text("blind votes")
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)


def test_report_tab_then_vote_on_its_stored_battles(page):
    from playwright.sync_api import expect

    open_tab(page, "Report")
    box = page.locator("#rp-max-new-tokens input[type=number]")
    box.fill("6")
    box.press("Enter")
    page.locator("#rp-run").click()
    expect(page.locator("#rp-status")).to_contain_text("5 prompts · 5 stored as blind battles",
                                                       timeout=TURN_TIMEOUT_MS)
    link = page.locator("#rp-files a[href$='report.html']")
    expect(link).to_have_count(1)
    assert "<html" in httpx.get(link.get_attribute("href"), timeout=10).text  # the download works
    expect(page.locator("#rp-preview")).to_contain_text("明明明明明白白白喜欢他")
    open_tab(page, "Leaderboard")
    page.get_by_text("Vote on stored battles").click()
    page.locator("#sv-next").click()
    expect(page.locator("#sv-head-a")).to_have_text("A · Model A")
    expect(page.locator("#sv-chat-a [data-testid='bot']")).to_have_count(1)
    expect(page.locator("#sv-note")).to_contain_text("5 waiting for a vote")
    page.locator("#sv-vote-bad").click()
    expect(page.locator("#sv-note")).to_contain_text(re.compile(r"Vote saved: Both bad.*A was SmolLM2"))
    expect(page.locator("#sv-vote-a")).to_be_disabled()
    page.locator("#sv-next").click()
    expect(page.locator("#sv-note")).to_contain_text("4 waiting for a vote")
