"""Embeds on another origin (iframe, and htmx with CORS), the builder, and the screenshots."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import SCREENSHOTS, Stack, Watched
from tests.browser.test_board import WAIT_MS, event_time, open_board, wait_for_new_event

pytestmark = pytest.mark.browser


def iframe_host(ours: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>A blog</title></head>
<body><h1>Someone else's page</h1>
<iframe id="widget" title="Live prices" width="520" height="120" style="border:0"
  src="{ours}/embed/BTCUSDT,ETHUSDT?theme=dark&view=compact&link=https://example.com/btc"></iframe>
</body></html>"""


def htmx_host(ours: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>A shop</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ours}/static/quote.css">
<script src="{ours}/static/vendor/htmx-2.0.11.min.js"></script>
<script src="{ours}/static/vendor/htmx-ext-sse-2.2.4.js"></script>
<script src="{ours}/static/embed.js"></script></head>
<body hx-ext="sse" sse-connect="{ours}/sse?symbols=BTCUSDT,ETHUSDT">
<h1>Pay with crypto</h1>
<p>Bitcoin right now:</p><div id="top" sse-swap="price-BTCUSDT">Loading…</div>
<p>Ether:</p><div id="eth" sse-swap="price-ETHUSDT">Loading…</div>
<footer><div id="bottom" class="ps-compact" sse-swap="price-BTCUSDT">Loading…</div></footer>
</body></html>"""


def test_iframe_embed_on_another_origin(watched: Watched, stack: Stack) -> None:
    host = stack.serve_host_pages({"/iframe.html": iframe_host(stack.url)})
    page = watched.page
    page.goto(host + "/iframe.html", wait_until="domcontentloaded")
    frame = page.frame_locator("#widget")
    btc = frame.locator("article[data-symbol=BTCUSDT][data-price]")
    expect(btc).to_have_count(1, timeout=WAIT_MS)
    expect(frame.locator("article[data-symbol=ETHUSDT][data-price]")).to_have_count(1)
    expect(frame.locator(".ps-demo")).to_have_count(2)
    expect(frame.locator(".ps-stats").first).to_be_hidden()  # compact
    expect(frame.locator("a.embed-link")).to_have_attribute("href", "https://example.com/btc")
    theme = frame.locator("html").get_attribute("data-theme")
    assert theme == "dark"
    first = int(btc.get_attribute("data-event-time") or 0)
    expect(btc).not_to_have_attribute("data-event-time", str(first), timeout=WAIT_MS)
    assert watched.problems() == []


def test_htmx_embed_with_cors_one_connection_for_many_widgets(
    watched: Watched, stack: Stack
) -> None:
    host = stack.serve_host_pages({"/shop.html": htmx_host(stack.url)})
    page = watched.page
    page.goto(host + "/shop.html", wait_until="domcontentloaded")
    for box in ("#top", "#eth", "#bottom"):
        expect(page.locator(f"{box} article[data-price]")).to_have_count(1, timeout=WAIT_MS)
    # Both BTC widgets follow the same stream.
    top = page.locator("#top article")
    first = int(top.get_attribute("data-event-time") or 0)
    page.wait_for_function(
        """after => ['#top', '#bottom'].every(
            id => Number(document.querySelector(id + ' article').dataset.eventTime) > after)""",
        arg=first,
        timeout=WAIT_MS,
    )
    expect(page.locator("#bottom .ps-stats")).to_be_hidden()
    expect(page.locator("#top .ps-stats")).to_be_visible()
    streams = [u for u in watched.requests if "/sse?" in u]
    assert streams == [stack.url + "/sse?symbols=BTCUSDT,ETHUSDT"]
    assert watched.problems() == []


def test_builder_previews_and_copies(context: BrowserContext, stack: Stack) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(stack.url + "/embed?symbols=BTCUSDT", wait_until="domcontentloaded")
    page.fill("input[name=symbols]", "ethusdt,solusdt")
    snippet = page.locator("#snippet-iframe")
    expect(snippet).to_have_value(re.compile(r"/embed/ETHUSDT,SOLUSDT\""), timeout=WAIT_MS)
    page.select_option("select[name=theme]", "dark")
    expect(page.locator("#snippet-iframe")).to_have_value(
        re.compile(r"/embed/ETHUSDT,SOLUSDT\?theme=dark"), timeout=WAIT_MS
    )
    expect(page).to_have_url(re.compile(r"symbols=ethusdt%2Csolusdt&theme=dark"))
    preview = page.frame_locator("#builder-out iframe")
    expect(preview.locator("article[data-symbol=SOLUSDT][data-price]")).to_have_count(
        1, timeout=WAIT_MS
    )
    page.click("button[data-copy=snippet-htmx]")
    expect(page.locator(".copied")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f'sse-connect="{stack.url}/sse?symbols=ETHUSDT,SOLUSDT"' in copied
    assert '<div sse-swap="price-SOLUSDT">' in copied
    page.fill("input[name=symbols]", "ethusdt,<b>")
    expect(page.locator("#builder-out .form-error")).to_contain_text(
        "malformed symbol '<b>'", timeout=WAIT_MS
    )
    # Each change replaces the preview frame, whose stream then ends: htmx's SSE extension logs
    # that as "[object Event]". The 400 is the answer to the bad symbol.
    expected = ("400", "console error: [object Event]")
    assert [e for e in watched.problems() if not any(x in e for x in expected)] == []


def _shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots(context: BrowserContext, stack: Stack, scheme: str) -> None:
    page = context.new_page()
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    watched = Watched(page)
    open_board(watched, stack)
    expect(page.locator("article[data-price]")).to_have_count(5, timeout=WAIT_MS)
    wait_for_new_event(page, "BTCUSDT", event_time(page, "BTCUSDT"))
    _shoot(page, f"board-{scheme}")
    page.set_viewport_size({"width": 300, "height": 190})
    page.goto(stack.url + "/embed/BTCUSDT", wait_until="domcontentloaded")
    expect(page.locator("article[data-price]")).to_have_count(1, timeout=WAIT_MS)
    _shoot(page, f"embed-{scheme}")
    page.set_viewport_size({"width": 1100, "height": 760})
    page.goto(stack.url + "/embed?symbols=BTCUSDT,ETHUSDT,SOLUSDT", wait_until="domcontentloaded")
    preview = page.frame_locator("#builder-out iframe")
    expect(preview.locator("article[data-price]")).to_have_count(3, timeout=WAIT_MS)
    _shoot(page, f"builder-{scheme}")
    assert watched.problems() == []
