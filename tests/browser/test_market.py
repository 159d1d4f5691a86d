"""The market view in a real Chromium: the chart draws and moves, the book and trades move, the
interval switch, the embed views, and the screenshots."""

from __future__ import annotations

import itertools

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import SCREENSHOTS, Stack, Watched
from tests.browser.test_board import WAIT_MS

pytestmark = pytest.mark.browser


def open_market(watched: Watched, stack: Stack, path: str = "/market/BTCUSDT") -> Page:
    page = watched.page
    page.goto(stack.url + path, wait_until="domcontentloaded")
    expect(page.locator(".board")).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    return page


def attribute_changes(page: Page, selector: str, attribute: str) -> None:
    """Wait until the first element matching `selector` shows a new value of `attribute`."""
    before = page.locator(selector).first.get_attribute(attribute)
    page.wait_for_function(
        """([selector, attribute, before]) => {
            const el = document.querySelector(selector);
            return el && el.getAttribute(attribute) !== before;
        }""",
        arg=[selector, attribute, before],
        timeout=WAIT_MS,
    )


def test_market_page_draws_and_moves_on_one_stream(watched: Watched, stack: Stack) -> None:
    page = open_market(watched, stack)
    expect(page.locator(".badge-demo")).to_have_text("DEMO · simulated prices")
    chart = page.locator('section[data-topic="chart:BTCUSDT:1m"]')
    expect(chart.locator("g[data-open-time]")).to_have_count(60, timeout=WAIT_MS)
    expect(chart.locator(".ps-demo")).to_have_text("DEMO")
    box = chart.locator("svg.ps-candles").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 120
    # The forming candle moves with the trades (the demo sends a kline every 2 s).
    attribute_changes(page, 'section[data-topic="chart:BTCUSDT:1m"]', "data-event-time")
    # The book moves ten times a second upstream; at most a few renders a second reach us.
    expect(page.locator('section[data-topic="book:BTCUSDT"] [data-side="ask"]')).to_have_count(
        20, timeout=WAIT_MS
    )
    attribute_changes(page, 'section[data-topic="book:BTCUSDT"]', "data-event-time")
    tape = page.locator('section[data-topic="trades:BTCUSDT"] [data-trade-id]')
    expect(tape).to_have_count(30, timeout=WAIT_MS)
    attribute_changes(page, 'section[data-topic="trades:BTCUSDT"] [data-trade-id]', "data-trade-id")
    ids = [int(i or 0) for i in tape.evaluate_all("els => els.map(e => e.dataset.tradeId)")]
    assert ids == sorted(set(ids), reverse=True)
    expect(page.locator("article[data-symbol=BTCUSDT][data-price]")).to_have_count(1)
    assert [u for u in watched.requests if "/sse?" in u] == [
        stack.url + "/sse?topics=price:BTCUSDT,chart:BTCUSDT:1m,book:BTCUSDT,trades:BTCUSDT"
    ]
    assert watched.problems() == []


def test_interval_switch_and_the_way_back_to_the_board(watched: Watched, stack: Stack) -> None:
    page = open_market(watched, stack)
    page.get_by_role("link", name="4h", exact=True).click()
    page.wait_for_url("**/market/BTCUSDT?interval=4h")
    chart = page.locator('section[data-topic="chart:BTCUSDT:4h"]')
    expect(chart.locator("g[data-open-time]")).to_have_count(60, timeout=WAIT_MS)
    expect(page.locator('.intervals a[aria-current="page"]')).to_have_text("4h")
    times = chart.locator("g[data-open-time]").evaluate_all(
        "els => els.map(e => Number(e.dataset.openTime))"
    )
    assert {b - a for a, b in itertools.pairwise(times)} == {4 * 3600 * 1000}
    page.locator(".brand a").click()
    page.wait_for_url(stack.url + "/?symbols=BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT")
    # A card opens its market view.
    page.locator('a.open-market[href="/market/ETHUSDT"]').click()
    page.wait_for_url("**/market/ETHUSDT")
    expect(page.locator('section[data-topic="book:ETHUSDT"]')).to_be_visible()
    assert watched.problems() == []


@pytest.mark.parametrize(
    ("query", "selector", "count"),
    [
        ("view=chart&interval=5m", 'section[data-topic="chart:BTCUSDT:5m"] g[data-open-time]', 60),
        ("view=book&theme=dark", 'section[data-topic="book:BTCUSDT"] [data-side]', 40),
        ("view=trades&bg=transparent", 'section[data-topic="trades:BTCUSDT"] [data-trade-id]', 30),
    ],
)
def test_embed_views(watched: Watched, stack: Stack, query: str, selector: str, count: int) -> None:
    page = watched.page
    page.set_viewport_size({"width": 520, "height": 460})
    page.goto(f"{stack.url}/embed/BTCUSDT?{query}", wait_until="domcontentloaded")
    expect(page.locator(selector)).to_have_count(count, timeout=WAIT_MS)
    expect(page.locator(".ps-demo")).to_have_text("DEMO")
    assert watched.problems() == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_market_screenshots(context: BrowserContext, stack: Stack, scheme: str) -> None:
    page = context.new_page()
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.set_viewport_size({"width": 1280, "height": 900})
    watched = Watched(page)
    open_market(watched, stack)
    expect(page.locator("g[data-open-time]")).to_have_count(60, timeout=WAIT_MS)
    expect(page.locator("[data-trade-id]")).to_have_count(30, timeout=WAIT_MS)
    expect(page.locator('[data-side="bid"]')).to_have_count(20, timeout=WAIT_MS)
    expect(page.locator("article[data-price]")).to_have_count(1, timeout=WAIT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"market-{scheme}.png", full_page=True)
    page.set_viewport_size({"width": 520, "height": 430})
    page.goto(stack.url + "/embed/BTCUSDT?view=chart", wait_until="domcontentloaded")
    expect(page.locator("g[data-open-time]")).to_have_count(60, timeout=WAIT_MS)
    page.screenshot(path=SCREENSHOTS / f"embed-chart-{scheme}.png")
    assert watched.problems() == []
