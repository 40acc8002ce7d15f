"""The Architecture tab in the real app, driven in headless Chromium (screenshot in artifacts/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import LEGACY_FIXTURES, start_app

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHATGLM3 = LEGACY_FIXTURES / "chatglm3-6b-tiny"
QWEN = LEGACY_FIXTURES / "qwen-7b-chat-tiny"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not LEGACY_FIXTURES.is_dir(), reason="legacy fixtures not present")]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    work = tmp_path_factory.mktemp("arch-app")
    with start_app(["--no-votes", "--model-a", str(CHATGLM3), "--model-b", str(QWEN)], work) as url:
        yield url


def row(page, label: str):
    return page.locator("#arch-table tr", has=page.locator("td.label", has_text=re.compile(f"^{re.escape(label)}$")))


def test_architecture_tab_compares_the_seed_formats(app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app_url)
        page.get_by_role("tab", name="Architecture").click()  # opening the tab fills the table
        expect(page.locator("#arch-table table.arch")).to_be_visible(timeout=120_000)
        kind = row(page, "attention kind")
        expect(kind).to_have_class("diff")
        expect(kind).to_contain_text("GQA (2 KV groups of 2 heads)")
        expect(kind).to_contain_text("MHA")
        expect(row(page, "layers")).not_to_have_class("diff")  # both fixtures have 2 layers
        expect(row(page, "rotated part of each head")).to_contain_text("50%")
        assert page.locator("#arch-table tr.diff").count() > 10
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "architecture.png"), full_page=True)

        page.locator("#arch-model-b input").click()  # another pair: B becomes the embedded GGUF
        page.get_by_role("option", name=re.compile("SmolLM2-135M-Instruct · bf16")).click()
        page.locator("#arch-run").click()
        expect(row(page, "family")).to_contain_text("Smollm2", timeout=180_000)
        expect(row(page, "tied embeddings")).to_contain_text("yes")
        page.screenshot(path=str(ARTIFACTS / "architecture-gguf.png"), full_page=True)
        browser.close()
