"""The owner in a real Chromium: signs in, sets an alert from a board card, sees it fire from
simulated prices, and watches the portfolio's value move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import SCREENSHOTS, Stack, Watched, demo_settings
from tests.browser.test_board import WAIT_MS

pytestmark = pytest.mark.browser
TOKEN = "browser-owner-token"


@pytest.fixture
def owned() -> Iterator[Stack]:
    s = Stack(demo_settings(owner_token=TOKEN))
    s.start()
    yield s
    s.close()


def test_sign_in_alert_from_a_card_fires_and_portfolio_moves(
    context: BrowserContext, owned: Stack
) -> None:
    page = context.new_page()
    watched = Watched(page)
    page.goto(owned.url + "/", wait_until="domcontentloaded")
    expect(page.locator("form.alert-form")).to_have_count(0)  # not the owner yet
    page.get_by_role("link", name="Sign in").click()
    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/alerts")
    page.goto(owned.url + "/", wait_until="domcontentloaded")
    expect(page.locator(".board")).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    expect(page.locator("article[data-symbol=BTCUSDT][data-price]")).to_have_count(
        1, timeout=WAIT_MS
    )
    card = page.locator(".slot", has=page.locator("article[data-symbol=BTCUSDT]"))
    # Below a price far above the market: the next simulated trade fires it.
    card.locator("select[name=condition]").select_option("below")
    card.locator("input[name=price]").fill("1000000")
    card.get_by_role("button", name="Alert me").click()
    expect(card.locator(".alert-answer")).to_contain_text(
        "Alert set: BTCUSDT below 1,000,000.00", timeout=WAIT_MS
    )
    banner = page.locator(".alert-area .alert-banner[data-symbol=BTCUSDT]")
    expect(banner).to_have_count(1, timeout=WAIT_MS)
    expect(banner).to_contain_text("BTCUSDT below 1,000,000.00")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "alert-fired.png")
    page.goto(owned.url + "/alerts", wait_until="domcontentloaded")
    expect(page.locator("tr[data-state=fired]")).to_have_count(1)
    # The portfolio: one BTC and some cash, valued live.
    page.goto(owned.url + "/portfolio", wait_until="domcontentloaded")
    page.fill("textarea[name=holdings]", "BTC 1\nUSDT 500\nNOPE 3")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/portfolio")
    table = page.locator(".portfolio-table")
    expect(table.locator("tr[data-asset=NOPE]")).to_contain_text("unpriced")
    first = table.get_attribute("data-total")
    page.wait_for_function(
        """(first) => {
            const t = document.querySelector(".portfolio-table");
            return t && t.dataset.total !== first;
        }""",
        arg=first,
        timeout=WAIT_MS,
    )
    page.screenshot(path=SCREENSHOTS / "portfolio.png")
    assert watched.problems() == []
