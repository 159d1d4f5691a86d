"""The WebSocket API end to end: a real `websockets` client, the real server and simulator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.demo import DemoExchange
from app.hub import Hub
from tests.conftest import (
    WAIT,
    LiveServer,
    both_paths,
    eventually,
    on_path,
    open_sse,
    price_streams,
    run_server,
    settings_for,
)

pytestmark = pytest.mark.anyio
Message = dict[str, Any]


def ws_url(server: LiveServer, path: str = "/ws/price") -> str:
    return server.url.replace("http://", "ws://") + path


@contextlib.asynccontextmanager
async def client(server: LiveServer, path: str = "/ws/price", **kw: Any) -> AsyncIterator[Reader]:
    async with asyncio.timeout(WAIT):
        ws = await connect(ws_url(server, path), open_timeout=WAIT, **kw)
    try:
        yield Reader(ws)
    finally:
        await ws.close()


class Reader:
    """Messages of one client, each read bounded by a timeout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: Message | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def next(self) -> Message:
        async with asyncio.timeout(WAIT):
            message: Message = json.loads(await self.ws.recv())
        return message

    async def until(self, check: Callable[[Message], bool]) -> Message:
        async with asyncio.timeout(WAIT):
            while not check(message := await self.next()):
                pass
        return message


def is_price(symbol: str, price: str | None = None) -> Callable[[Message], bool]:
    def check(m: Message) -> bool:
        return (
            m["type"] == "price"
            and m["symbol"] == symbol
            and (m["price"] is not None if price is None else m["price"] == price)
        )

    return check


async def test_subscribe_snapshot_live_prices_and_unsubscribe(
    live: LiveServer, exchange: DemoExchange
) -> None:
    async with client(live) as c:
        assert await c.next() == {"type": "status", "state": "idle"}
        await c.send({"type": "subscribe", "symbols": ["BTCUSDT", "ethusdt"]})
        subscribed = await c.until(lambda m: m["type"] == "subscribed")
        assert subscribed["symbols"] == ["BTCUSDT", "ETHUSDT"]
        # The current price of each comes at once (none yet: null, never a guess).
        snapshot = await c.until(lambda m: m["type"] == "price" and m["symbol"] == "ETHUSDT")
        assert snapshot["price"] is None and snapshot["stale"] is False
        await eventually(
            lambda: exchange.subscriptions() >= price_streams("BTCUSDT") | price_streams("ETHUSDT")
        )
        ticker = exchange.ticker("BTCUSDT")
        message = await c.until(is_price("BTCUSDT", ticker["c"]))
        assert message == {
            "type": "price",
            "symbol": "BTCUSDT",
            "price": ticker["c"],
            "event_time": ticker["E"],
            "change": ticker["p"],
            "change_percent": ticker["P"],
            "high": ticker["h"],
            "low": ticker["l"],
            "volume": ticker["v"],
            "quote_volume": ticker["q"],
            "stale": False,
        }
        trade = exchange.trade("BTCUSDT", price="93777.77")
        message = await c.until(is_price("BTCUSDT", "93777.77000000"))
        assert message["event_time"] == trade["E"]
        await c.send({"type": "unsubscribe", "symbols": ["BTCUSDT"]})
        gone = await c.until(lambda m: m["type"] == "unsubscribed")
        assert gone["symbols"] == ["ETHUSDT"]
        # No more BTC; ETH still flows.
        exchange.trade("BTCUSDT", price="90000.00")
        exchange.trade("ETHUSDT", price="3333.33")
        after = await c.until(is_price("ETHUSDT", "3333.33000000"))
        assert after["symbol"] == "ETHUSDT"
        await c.send({"type": "ping", "id": "last"})
        rest = []
        while (m := await c.next())["type"] != "pong":
            rest.append(m)
        assert not [m for m in rest if m.get("symbol") == "BTCUSDT"]


async def test_path_symbol_ping_pong_and_market_topics(
    live: LiveServer, exchange: DemoExchange
) -> None:
    async with client(live, "/ws/price/solusdt") as c:
        first = await c.next()
        assert first == {"type": "subscribed", "symbols": ["SOLUSDT"], "topics": ["price:SOLUSDT"]}
        await c.send({"type": "ping", "id": 42, "sent": "now"})
        assert await c.until(lambda m: m["type"] == "pong") == {
            "type": "pong",
            "id": 42,
            "sent": "now",
        }
        await c.send({"type": "subscribe", "topics": ["book:SOLUSDT", "chart:SOLUSDT:5m"]})
        await eventually(lambda: "solusdt@depth20@100ms" in exchange.subscriptions())
        book = exchange.depth("SOLUSDT")
        shown = await c.until(lambda m: m["type"] == "book" and bool(m["bids"]))
        assert shown["bids"] == book["bids"] and shown["asks"] == book["asks"]
        chart = await c.until(lambda m: m["type"] == "candles" and bool(m["candles"]))
        assert chart["interval"] == "5m" and len(chart["candles"]) == 60


@pytest.mark.parametrize(
    ("sent", "code", "message"),
    [
        ("{nope", "invalid-json", "not JSON: '{nope'"),
        (
            "[1, 2]",
            "not-an-object",
            'send a JSON object, like {"type": "subscribe", "symbols": [...]}',
        ),
        (
            '{"type": "dance"}',
            "unknown-type",
            "unknown type 'dance': use subscribe, unsubscribe or ping",
        ),
        ('{"type": "subscribe"}', "missing-symbols", 'name them: {"symbols": ["BTCUSDT"]}'),
        (
            '{"type": "subscribe", "symbols": "BTCUSDT"}',
            "bad-symbols",
            "symbols must be a list of strings",
        ),
        (
            '{"type": "subscribe", "symbols": [1]}',
            "bad-symbols",
            "symbols must be a list of strings",
        ),
        (
            json.dumps({"type": "subscribe", "symbols": ["BTCUSDT"] * 51}),
            "too-many-symbols",
            "51 symbols: at most 50 at once",
        ),
        (
            '{"type": "subscribe", "topics": ["chart:BTCUSDT:9m"]}',
            "bad-symbol",
            "unknown interval '9m': use one of 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, "
            "1d, 3d, 1w, 1M",
        ),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_stays(
    live: LiveServer, sent: str, code: str, message: str
) -> None:
    async with client(live) as c:
        await c.send(sent)
        error = await c.until(lambda m: m["type"] == "error")
        assert error == {"type": "error", "code": code, "message": message}
        await c.send({"type": "ping", "id": 1})
        assert (await c.until(lambda m: m["type"] == "pong"))["id"] == 1


async def test_valid_symbols_apply_beside_bad_ones(live: LiveServer) -> None:
    async with client(live) as c:
        await c.send({"type": "subscribe", "symbols": ["BTCUSDT", "NOPE", "BTC-USD", "ETHUSDT"]})
        errors = [await c.until(lambda m: m["type"] == "error") for _ in range(2)]
        assert [e["message"] for e in errors] == [
            "unknown symbol 'NOPE': Binance does not list it",
            "malformed symbol 'BTC-USD': use letters and digits only, at most 20 characters, "
            "like BTCUSDT",
        ]
        subscribed = await c.until(lambda m: m["type"] == "subscribed")
        assert subscribed["symbols"] == ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(
    ("abuse", "code"),
    [
        ("oversized", 1009),
        ("binary", 1008),
        ("flood", 1008),
    ],
)
async def test_abuse_closes_with_a_code(live: LiveServer, abuse: str, code: int) -> None:
    async with client(live) as c:
        if abuse == "oversized":
            await c.send(json.dumps({"type": "ping", "pad": "x" * 20_000}))
        elif abuse == "binary":
            await c.ws.send(b'{"type": "ping"}')
        else:
            for i in range(40):
                await c.send({"type": "ping", "id": i})
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT):
                while True:
                    await c.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_origins_and_limits_count_sse_and_websockets_together(
    exchange: DemoExchange,
) -> None:
    settings = settings_for(
        exchange, cors_origins=("https://ok.example",), max_streams_per_client=2
    )
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(server), origin="https://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        assert b"origin 'https://evil.example' may not open this socket" in (
            refused.value.response.body or b""
        )
        host = server.url.removeprefix("http://")
        async with (
            client(server, origin="https://ok.example") as _allowed,
            open_sse(http, "/sse?symbols=BTCUSDT"),
        ):
            # Our own pages are same-origin, whatever the list says; but two are open already.
            with pytest.raises(InvalidStatus) as full:
                await connect(ws_url(server), origin=f"http://{host}")  # type: ignore[arg-type]
            assert full.value.response.status_code == 429
            assert full.value.response.headers["Retry-After"] == "10"
        async with client(server, origin=f"http://{host}"):
            pass
        bad = await http.get("/api/v1/quotes?symbols=BTCUSDT,NOPE")
        assert (
            bad.status_code == 400 and bad.text == "unknown symbol 'NOPE': Binance does not list it"
        )


@both_paths
async def test_a_client_that_never_reads_is_bounded_and_harmless(
    exchange: DemoExchange, direct: bool
) -> None:
    settings = settings_for(
        exchange, render_interval=0.0, max_streams_per_client=50, direct_writes=direct
    )
    async with run_server(settings) as server, client(server) as fast:
        hub: Hub = server.app.state.hub
        symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
        async with asyncio.timeout(WAIT):
            # max_queue=1 and a tiny receive buffer: this client stops reading at once.
            stuck = await connect(ws_url(server), max_queue=1, open_timeout=WAIT)
        stuck.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        await stuck.send(json.dumps({"type": "subscribe", "symbols": symbols}))
        await fast.send({"type": "subscribe", "symbols": ["BTCUSDT"]})
        await eventually(lambda: exchange.subscriptions() >= price_streams("SOLUSDT"))
        await eventually(lambda: on_path(server, direct, 2))
        for _ in range(300):
            for symbol in symbols:
                exchange.trade(symbol)
            await asyncio.sleep(0)
        last = exchange.trade("BTCUSDT", price="95555.55")
        started = asyncio.get_running_loop().time()
        await fast.until(is_price("BTCUSDT", last["p"]))
        assert asyncio.get_running_loop().time() - started < 2.0
        [slow] = [s for s in hub.subscribers if s.transport == "ws" and len(s.topics) == 4]
        assert len(slow.pending) <= len(symbols) + 1  # one slot per topic and the status
        await stuck.close()


async def test_a_client_that_answers_no_ping_is_dropped(exchange: DemoExchange) -> None:
    async with run_server(settings_for(exchange, ws_ping=0.3)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws/price HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        hub: Hub = server.app.state.hub
        await eventually(lambda: hub.viewers()["ws"] == 1)
        # It reads what comes (pings included) but never answers: gone within two ping periods.
        async with asyncio.timeout(5.0):
            while await reader.read(4096):
                pass
        await eventually(lambda: hub.viewers()["ws"] == 0)
        writer.close()


@both_paths
async def test_shutdown_closes_every_socket_with_1001(exchange: DemoExchange, direct: bool) -> None:
    async with run_server(settings_for(exchange, direct_writes=direct)) as server:
        sockets = [await connect(ws_url(server, "/ws/price/BTCUSDT")) for _ in range(3)]
        for ws in sockets:
            await ws.recv()
        await eventually(lambda: on_path(server, direct, 3))
        started = asyncio.get_running_loop().time()
        server.server.should_exit = True
        for ws in sockets:
            async with asyncio.timeout(WAIT):
                await ws.wait_closed()
            assert ws.close_code == 1001
        assert asyncio.get_running_loop().time() - started < 2.0


def readme_client() -> str:
    """The README's Python client, as a user would copy it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [code] = [c for c in re.findall(r"```python\n(.+?)```", readme, re.S) if "/ws/price" in c]
    return str(code)


async def test_the_readme_client_survives_a_server_restart(exchange: DemoExchange) -> None:
    code = readme_client()
    settings = settings_for(exchange)
    proc = None
    try:
        async with run_server(settings) as first:
            port = int(first.url.rsplit(":", 1)[1])
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code.replace("ws://127.0.0.1:8000", f"ws://127.0.0.1:{port}"),
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            await eventually(lambda: exchange.subscriptions() >= price_streams("ETHUSDT"))
            exchange.trade("ETHUSDT", price="3456.78")
            async with asyncio.timeout(WAIT):
                line = await proc.stdout.readline()
            assert line.decode().split() == ["ETHUSDT", "3456.78000000"]
        # The server stopped (the client got 1001) and starts again on the same port; the
        # client's own backoff brings it back (websockets waits up to about 5 s, then 3 s...).
        async with run_server(settings, port=port):
            await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"), 30)
            exchange.trade("BTCUSDT", price="94567.89")
            async with asyncio.timeout(WAIT):
                while True:
                    words = (await proc.stdout.readline()).decode().split()
                    if words[:2] == ["BTCUSDT", "94567.89000000"]:
                        break
    finally:
        if proc is not None:
            proc.kill()
            await proc.wait()


async def test_clients_that_vanish_mid_stream_leave_no_traceback(
    exchange: DemoExchange, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(exchange, render_interval=0.0, max_streams_per_client=100)
    async with run_server(settings) as server:
        clients = [await connect(ws_url(server, "/ws/price/BTCUSDT")) for _ in range(20)]
        await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"))
        for _ in range(50):
            exchange.trade("BTCUSDT")
        for ws in clients:
            ws.transport.abort()  # gone, without a close frame, while updates are in flight
        for _ in range(50):
            exchange.trade("BTCUSDT")
            await asyncio.sleep(0.005)
        hub: Hub = server.app.state.hub
        await eventually(lambda: hub.viewers()["ws"] == 0)
        # Some leave politely, and the server then stops with others still open.
        polite = [await connect(ws_url(server, "/ws/price/BTCUSDT")) for _ in range(3)]
        await polite[0].close()
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
