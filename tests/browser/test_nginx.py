"""The board through nginx in a real Chromium: its server is killed, the page reconnects to the
other one by itself, says so while it does, and goes on showing live prices."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from playwright.sync_api import expect

from app.demo import DemoExchange
from tests.browser.conftest import Watched, _cancel_the_rest
from tests.browser.test_board import WAIT_MS, event_time, wait_for_new_event
from tests.nginx import Cluster, behind_nginx

T = TypeVar("T")
pytestmark = pytest.mark.browser
# Records every value the board's data-conn takes, with the page's clock, from now on.
WATCH_CONN = """() => {
    const board = document.querySelector(".board");
    window.__conn = [[board.dataset.conn, performance.now()]];
    new MutationObserver(() => window.__conn.push([board.dataset.conn, performance.now()]))
        .observe(board, {attributes: true, attributeFilter: ["data-conn"]});
}"""


@dataclass
class Running:
    """Two servers behind nginx on a live demo exchange, on a loop in a thread (Playwright's
    sync API keeps the main one)."""

    cluster: Cluster
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture
def running() -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> Cluster:
        exchange = await stack.enter_async_context(DemoExchange(trades_per_second=5, seed=7))
        return await stack.enter_async_context(behind_nginx(exchange))

    try:
        yield Running(asyncio.run_coroutine_threadsafe(start(), loop).result(60), loop)
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_page_through_nginx_outlives_its_server(watched: Watched, running: Running) -> None:
    page = watched.page
    page.goto(running.cluster.url + "/?symbols=BTCUSDT", wait_until="domcontentloaded")
    board = page.locator(".board")
    expect(board).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    wait_for_new_event(page, "BTCUSDT", event_time(page, "BTCUSDT"))
    page.evaluate(WATCH_CONN)
    page.evaluate("window.__sameDocument = true")

    doomed = running.run(running.cluster.server_with_viewers(1))
    running.run(doomed.kill())
    expect(board).to_have_attribute("data-conn", "reconnecting", timeout=WAIT_MS)
    expect(page.locator(".conn-browser")).to_be_visible()
    expect(board).to_have_attribute("data-conn", "live", timeout=WAIT_MS)
    survivor = next(s for s in running.cluster.servers if s is not doomed)
    assert running.run(survivor.viewers()) == 1
    wait_for_new_event(page, "BTCUSDT", event_time(page, "BTCUSDT"))
    expect(page.locator("#upstream-status")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )

    # The indicator told the gap as it was: live, reconnecting while the browser waited the
    # server's retry (2 s), live again; never "down", as nginx gave it no error to give up on.
    changes: list[tuple[str, float]] = page.evaluate("window.__conn")
    assert [state for state, _ in changes] == ["live", "reconnecting", "live"], changes
    gap = (changes[2][1] - changes[1][1]) / 1000
    assert 1.5 <= gap < 6, gap
    assert page.evaluate("window.__sameDocument") is True  # no reload
    # The one stream nginx cut is all that went wrong: Chromium reports the cut body, and
    # htmx's SSE extension logs the EventSource's error event.
    cut = "net::ERR_INCOMPLETE_CHUNKED_ENCODING"
    assert [e for e in watched.problems() if cut not in e] == ["console error: [object Event]"]
