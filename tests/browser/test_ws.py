"""The WebSocket API from a page in a real Chromium: our Content-Security-Policy lets our own
pages open it, and the README's browser snippet works as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage

from tests.browser.conftest import Stack, Watched
from tests.browser.test_board import WAIT_MS

pytestmark = pytest.mark.browser
README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_page_opens_the_websocket_api(watched: Watched, stack: Stack) -> None:
    page = watched.page
    page.goto(stack.url + "/", wait_until="domcontentloaded")
    message: dict[str, Any] = page.evaluate(
        """(timeout) => new Promise((resolve, reject) => {
            const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws/price");
            ws.onopen = () => ws.send(JSON.stringify({type: "subscribe", symbols: ["BTCUSDT"]}));
            ws.onmessage = (e) => {
              const m = JSON.parse(e.data);
              if (m.type === "price" && m.price) { ws.close(); resolve(m); }
            };
            ws.onerror = () => reject(new Error("the socket failed"));
            setTimeout(() => reject(new Error("no price in time")), timeout);
        })""",
        WAIT_MS,
    )
    assert message["symbol"] == "BTCUSDT" and message["stale"] is False
    assert re.fullmatch(r"\d+\.\d{8}", message["price"])
    assert isinstance(message["event_time"], int)
    assert watched.problems() == []


def test_the_readme_browser_snippet(watched: Watched, stack: Stack) -> None:
    [snippet] = re.findall(r"```js\n(.+?)```", README.read_text(), re.S)
    snippet = snippet.replace("ws://127.0.0.1:8000", stack.url.replace("http://", "ws://"))
    page = watched.page
    logged: list[str] = []

    def log(message: ConsoleMessage) -> None:
        if message.type == "log":
            logged.append(message.text)

    page.on("console", log)
    page.goto(stack.url + "/embed", wait_until="domcontentloaded")
    page.evaluate(f"() => {{ {snippet} }}")
    deadline_ms = WAIT_MS  # the console listener collects while we wait
    while not any(re.fullmatch(r"BTCUSDT \d+\.\d{8} ", line) for line in logged):
        page.wait_for_timeout(100)
        deadline_ms -= 100
        assert deadline_ms > 0, logged
    assert watched.problems() == []
