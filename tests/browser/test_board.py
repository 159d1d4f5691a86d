"""The board in a real Chromium: live updates, the watchlist form, the indicator, staleness."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Stack, Watched

pytestmark = pytest.mark.browser
# Generous: the demo trades about 3 times a second per symbol, and CI machines are shared.
WAIT_MS = 15_000


def event_time(page: Page, symbol: str) -> int:
    value = page.locator(f'article[data-symbol="{symbol}"]').get_attribute("data-event-time")
    return int(value or 0)


def wait_for_new_event(page: Page, symbol: str, after: int) -> None:
    page.wait_for_function(
        """([symbol, after]) => {
            const a = document.querySelector(`article[data-symbol="${symbol}"]`);
            return a && Number(a.dataset.eventTime || 0) > after;
        }""",
        arg=[symbol, after],
        timeout=WAIT_MS,
    )


def open_board(watched: Watched, stack: Stack, query: str = "") -> Page:
    page = watched.page
    page.goto(stack.url + "/" + query, wait_until="domcontentloaded")
    expect(page.locator(".board")).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    expect(page.locator("#upstream-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    return page


def test_board_updates_in_place(watched: Watched, stack: Stack) -> None:
    page = open_board(watched, stack)
    expect(page.locator(".badge-demo")).to_have_text("DEMO · simulated prices")
    expect(page.locator("article[data-price]")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("article .ps-demo")).to_have_count(5)
    page.evaluate("window.__sameDocument = true")
    for symbol in ("BTCUSDT", "ETHUSDT"):
        before = event_time(page, symbol)
        wait_for_new_event(page, symbol, before)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    prices = page.locator("article[data-symbol=BTCUSDT] .ps-value")
    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", prices.inner_text())
    expect(page.locator(".conn")).to_contain_text("Live · demo exchange")
    assert watched.problems() == []
    assert [u for u in watched.requests if "/sse?" in u] == [
        stack.url + "/sse?symbols=BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT"
    ]


def test_form_adds_and_removes_symbols(watched: Watched, stack: Stack) -> None:
    page = open_board(watched, stack, "?symbols=BTCUSDT,ETHUSDT")
    page.fill("#add-symbol", "dogeusdt")
    page.press("#add-symbol", "Enter")
    page.wait_for_url(re.compile(r"symbols=BTCUSDT,ETHUSDT,DOGEUSDT$"), timeout=WAIT_MS)
    expect(page.locator("article[data-symbol=DOGEUSDT][data-price]")).to_have_count(
        1, timeout=WAIT_MS
    )
    page.click('a[aria-label="Remove ETHUSDT"]')
    page.wait_for_url(re.compile(r"symbols=BTCUSDT,DOGEUSDT$"), timeout=WAIT_MS)
    expect(page.locator("article[data-symbol]")).to_have_count(2)
    expect(page.locator("article[data-symbol=ETHUSDT]")).to_have_count(0)
    before = event_time(page, "DOGEUSDT")
    wait_for_new_event(page, "DOGEUSDT", before)
    page.fill("#add-symbol", "NOPE")
    page.press("#add-symbol", "Enter")
    expect(page.locator(".form-error")).to_have_text(
        "unknown symbol 'NOPE': Binance does not list it", timeout=WAIT_MS
    )
    # The 400 is the answer to the bad symbol; nothing else may go wrong.
    assert [e for e in watched.problems() if "400" not in e] == []


def test_indicator_follows_the_server_down_and_back(watched: Watched, stack: Stack) -> None:
    page = open_board(watched, stack, "?symbols=BTCUSDT")
    stack.stop()
    board = page.locator(".board")
    expect(board).to_have_attribute("data-conn", re.compile("reconnecting|down"), timeout=WAIT_MS)
    expect(page.locator(".conn-browser")).to_be_visible()
    expect(page.locator(".conn-browser")).to_have_text("Connecting…")
    stack.start()  # same port
    expect(board).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    before = event_time(page, "BTCUSDT")
    wait_for_new_event(page, "BTCUSDT", before)
    expect(page.locator(".conn")).to_contain_text("Live")


def test_upstream_stall_greys_the_price_then_recovers(watched: Watched, stack: Stack) -> None:
    page = open_board(watched, stack, "?symbols=BTCUSDT,ETHUSDT")
    expect(page.locator("article[data-price]")).to_have_count(2, timeout=WAIT_MS)
    stack.call(stack.exchange.stall)
    expect(page.locator("article.stale")).to_have_count(2, timeout=WAIT_MS)
    asof = page.locator("article[data-symbol=BTCUSDT] .ps-asof")
    expect(asof).to_have_text(re.compile(r"as of \d\d:\d\d:\d\d UTC"))
    stale_color = page.locator("article[data-symbol=BTCUSDT] .ps-value").evaluate(
        "e => getComputedStyle(e).color"
    )
    stack.call(stack.exchange.stall, False)
    expect(page.locator("article.stale")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#upstream-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    live_color = page.locator("article[data-symbol=BTCUSDT] .ps-value").evaluate(
        "e => getComputedStyle(e).color"
    )
    assert stale_color != live_color
