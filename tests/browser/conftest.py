"""Browser fixtures: Debian's Chromium driven by Playwright, against servers in a background loop.

Playwright's sync API cannot run inside an asyncio loop, so the servers (our app in demo mode, and
a second origin serving host pages) run on their own loop in a thread; tests reach the demo
exchange through `Stack.call`. Chromium comes from Debian's package (Playwright's own browser
download cannot work here); the session installs it when it is missing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    sync_playwright,
)
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.application import create_app, drain
from app.config import Settings
from app.demo import DemoExchange
from app.server import Server, uvicorn_config
from tests.conftest import data_dir
from tests.system import debian_program

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
# The flags that keep Chromium from reaching for the network it does not have here.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = pytest.mark.browser


def _chromium() -> str:
    return debian_program("chromium", "chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page plus what went wrong on it: console errors, page errors, failed requests."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        page.on("response", self._response)
        page.on("request", self._request)

    def problems(self) -> list[str]:
        """Errors, less the aborted event streams (and the icon) that leaving a page causes."""
        return [
            e for e in self.errors if not (("/sse?" in e or "favicon" in e) and "ERR_ABORTED" in e)
        ]

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 640})
    yield ctx
    ctx.close()


@pytest.fixture
def watched(context: BrowserContext) -> Watched:
    return Watched(context.new_page())


def _bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class Stack:
    """Our app in demo mode (and optionally a host-page server) on a loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.app: Starlette | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._host: tuple[uvicorn.Server, asyncio.Task[None]] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the servers' loop (the demo exchange is not thread-safe)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    @property
    def exchange(self) -> DemoExchange:
        assert self.app is not None
        exchange: DemoExchange = self.app.state.demo_exchange
        return exchange

    async def _serve(
        self, app: Any, sock: socket.socket
    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        config = uvicorn_config(
            app, self.settings, log_level="warning", timeout_graceful_shutdown=1
        )
        # Our app gets our Server (streams end at once on stop); the host-page app needs none.
        server = Server(
            config, before_shutdown=lambda: drain(app) if isinstance(app, Starlette) else None
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        return server, task

    def start(self) -> None:
        """Start our app; on a restart, on the same port as before."""
        sock = _bind(self.port)
        self.port = sock.getsockname()[1]
        self.app = create_app(self.settings)
        self._server, self._task = self.run(self._serve(self.app, sock))

    def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self.run(asyncio.wait_for(self._task, 20))
            self._server = self._task = None

    def serve_host_pages(self, pages: dict[str, str]) -> str:
        """A second origin serving `pages` (path -> HTML); returns its base URL."""

        async def handler(request: HttpRequest) -> HTMLResponse:
            return HTMLResponse(pages[request.url.path])

        host = Starlette(routes=[Route(path, handler) for path in pages])
        sock = _bind()
        port = sock.getsockname()[1]
        self._host = self.run(self._serve(host, sock))
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.stop()
        if self._host is not None:
            server, task = self._host
            server.should_exit = True
            self.run(asyncio.wait_for(task, 20))
        self.run(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    """Tasks libraries leave on the loop (sse-starlette's shutdown watcher) end with it."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def demo_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "demo": True,
        "port": 0,
        "log_level": "warning",
        "grace_period": 1.0,
        "stall_timeout": 2.0,
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
        "data_dir": data_dir(),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack(demo_settings())
    s.start()
    yield s
    s.close()
