"""Shared fixtures: the real demo exchange, a real uvicorn on a loopback socket, SSE readers.

Nothing of our own is mocked. Time-sensitive waits use `MS`, which `PRICESTREAM_TEST_TIMESCALE`
scales for slow machines, and every network wait sits inside a timeout so a hang fails fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import ServerSentEvent, aconnect_sse

from app.application import create_app, drain
from app.config import Settings
from app.demo import DemoExchange
from app.server import Server, raise_open_files_limit, uvicorn_config
from tests.databases import Database, PostgresServer

# One time unit for the suite (websockets' tests/utils.py does the same), scaled on slow CI.
MS = 0.001 * float(os.environ.get("PRICESTREAM_TEST_TIMESCALE", "1"))
# How long any single wait for a network event may take before the test fails.
WAIT = 10_000 * MS


# Run a test on both ways to a viewer's socket: the hub's direct writes (app.direct, the default)
# and the ordinary ASGI send they fall back to.
both_paths = pytest.mark.parametrize("direct", [True, False], ids=["direct", "asgi"])


def on_path(server: LiveServer, direct: bool, viewers: int) -> bool:
    """Are the server's `viewers` open streams all served the way the test asked?"""
    health = server.app.state.hub.health()
    open_streams: int = sum(health["viewers_by_transport"].values())
    return open_streams == viewers and health["viewers_direct"] == (viewers if direct else 0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def exchange() -> AsyncIterator[DemoExchange]:
    """A quiet simulator: no trades or tickers unless a test publishes them."""
    async with DemoExchange(
        trades_per_second=0, ticker_interval=3600, kline_interval=3600, depth_interval=3600, seed=7
    ) as ex:
        yield ex


def settings_for(ex: DemoExchange, **overrides: Any) -> Settings:
    """Settings pointing at `ex`, with delays short enough for tests."""
    values: dict[str, Any] = {
        "upstream": ex.ws_url,
        "rest": ex.rest_url,
        "port": 0,
        "grace_period": 0.2,
        "stall_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "control_rate": 4.0,
        "shutdown_timeout": 1.0,
        "log_level": "warning",
        "data_dir": data_dir(),
    }
    values.update(overrides)
    return Settings(**values)


def data_dir() -> str:
    """A fresh, empty data folder for one server (its SQLite file goes there)."""
    return tempfile.mkdtemp(prefix="pricestream-test-")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session (started only if a test asks for it)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


# A test that takes `database` runs twice: on a SQLite file, and on a fresh PostgreSQL database.
@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    if request.param == "sqlite":
        return Database(data_dir())
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return Database(data_dir(), postgres.create_database())


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    app: Any

    @property
    def state(self) -> Any:
        return self.server.config.loaded_app


@contextlib.asynccontextmanager
async def run_server(
    settings: Settings, port: int = 0, **uvicorn_options: Any
) -> AsyncIterator[LiveServer]:
    """A real uvicorn serving create_app(settings) on a socket we bound ourselves (to port 0
    unless told, e.g. to restart on the same port), with any of uvicorn's own options."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    raise_open_files_limit(settings)  # as the command does: tests hold hundreds of sockets
    app = create_app(settings)
    options = {"log_level": "warning", "lifespan": "on", "timeout_graceful_shutdown": 1}
    config = uvicorn_config(app, settings, **{**options, **uvicorn_options})
    server = Server(config, before_shutdown=lambda: drain(app))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(10 * MS)
        yield LiveServer(f"http://127.0.0.1:{port}", server, app)
    finally:
        server.should_exit = True
        async with asyncio.timeout(WAIT):
            await task
        sock.close()


@pytest.fixture
async def live(exchange: DemoExchange) -> AsyncIterator[LiveServer]:
    async with run_server(settings_for(exchange)) as server:
        yield server


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=WAIT) as client:
        yield client


class EventReader:
    """Reads an open SSE stream event by event, each read bounded by a timeout."""

    def __init__(self, events: AsyncIterator[ServerSentEvent]) -> None:
        self._events = events
        self.seen: list[ServerSentEvent] = []

    async def next(self, timeout: float = WAIT) -> ServerSentEvent:
        async with asyncio.timeout(timeout):
            event = await anext(self._events)
        self.seen.append(event)
        return event

    async def until(
        self, predicate: Callable[[ServerSentEvent], bool], timeout: float = WAIT
    ) -> ServerSentEvent:
        """The first event that satisfies `predicate`, within `timeout` seconds overall."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if predicate(event):
                    return event


@contextlib.asynccontextmanager
async def open_sse(client: httpx.AsyncClient, path: str) -> AsyncIterator[EventReader]:
    async with aconnect_sse(client, "GET", path) as source:
        assert source.response.status_code == 200, source.response.status_code
        yield EventReader(source.aiter_sse())


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs = tag, attrs
        self.text = ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in ("meta", "link", "input", "br", "img"):
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                break

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.text += data


class RawViewer:
    """An SSE client at the socket level: cheap enough to hold thousands, and able to stop
    reading altogether."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str, rcvbuf: int | None = None) -> RawViewer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        return cls(reader, writer)

    async def first_price(self) -> None:
        async with asyncio.timeout(WAIT):
            data = b""
            while b"event: price-" not in data:
                chunk = await self.reader.read(4096)
                assert chunk, "stream ended before its first price"
                data += chunk

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the server may have gone first


def parse_html(html: str) -> list[Element]:
    """Every element of `html`, in document order, with its attributes and inner text."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.elements


def root(html: str) -> Element:
    """The first element: a fragment's root."""
    return parse_html(html)[0]


def find(html: str, **attrs: str) -> list[Element]:
    return [
        e
        for e in parse_html(html)
        if all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
    ]


async def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `check` until it holds; fail with a TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(5 * MS)


def price_streams(symbol: str) -> set[str]:
    """The upstream streams a price card listens to."""
    low = symbol.lower()
    return {f"{low}@trade", f"{low}@ticker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API keeps an event loop of its own in the main
    thread for the session, and the asyncio tests cannot start theirs beside it."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
