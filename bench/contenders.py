"""The comparison servers, run as `python -m bench.contenders floor|wsfloor|common --port P ...`.

- floor: a bare ASGI callable with no framework in between. It receives the same upstream,
  renders each update once (with pricestream's own parser, price panel, template and template
  arguments), and hands the same SSE bytes to every viewer: a latest-value slot per symbol and a
  wake-up flag per viewer, one send per wake-up. It is what this design costs with nothing else
  on top.
- wsfloor: the same for WebSocket clients. A bare ASGI callable that takes a client's
  `subscribe` message, answers `subscribed` and `status` as pricestream does, encodes each
  update's `price` message once (pricestream's JSON: the panel's data with msgspec) and hands
  the same text to every client of the symbol: a latest-value slot per symbol and a wake-up flag
  per client, then one `websocket.send` per message, as ASGI allows no other way.
- common: what people usually write. Starlette + sse-starlette, an unbounded asyncio.Queue per
  viewer, and a template render per viewer per update (the panel's template arguments are worked
  out once per update, so every viewer's bytes are the same as pricestream's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect

from app.binance import stream_url
from app.config import Settings
from app.market import Message, ParseError, parse
from app.render import Renderer, sse_event
from app.rest import Rest
from app.server import uvicorn_config
from app.simulation import MARKET
from app.symbols import SymbolDirectory
from app.topics.key import Topic
from app.topics.price import PricePanel

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
# What pricestream says about a live upstream, and how it encodes messages.
LIVE = '{"type":"status","state":"live"}'
_json = msgspec.json.Encoder()


class Market:
    """The upstream feed, the price panels and the rendering both contenders share with
    pricestream: the same parser, panels, template and template arguments as the hub's."""

    def __init__(self, upstream: str, rest: str, symbols: list[str]) -> None:
        self.upstream, self.symbols = upstream, symbols
        self.settings = Settings(upstream=upstream, rest=rest)
        self.renderer = Renderer()
        self.directory = SymbolDirectory(self.settings)
        self.panels: dict[str, PricePanel] = {}  # by stream

    async def load(self) -> None:
        """The symbol list, then a panel per symbol, seeded from REST as the hub seeds it (the
        card's sparkline), so the fragments are the hub's, byte for byte in shape."""
        async with Rest(self.settings) as rest:
            await self.directory.refresh(rest)
            for symbol in self.symbols:
                panel = PricePanel(Topic("price", symbol), self.directory.info(symbol))
                history = panel.history()
                fetched_ms = time.time_ns() // 1_000_000
                panel.seed(await rest.get(history.path, history.params), fetched_ms)
                for stream in panel.streams():
                    self.panels[stream] = panel

    def arguments(self, panel: PricePanel) -> dict[str, Any]:
        """What app/hub.py `_render` passes the template, for a live (never stale) panel whose
        history was had."""
        info = panel.info
        return {
            "topic": panel.topic,
            "stale": False,
            "has_data": panel.has_data,
            "demo": False,
            "event_time": panel.event_time,
            "error": None,
            "decimals": info.decimals if info else None,
            "quote_asset": info.quote if info else "",
            "base_asset": info.base if info else "",
            **panel.context(),
        }

    def render(self, panel: PricePanel, arguments: dict[str, Any]) -> str:
        return self.renderer.fragment(panel.template, **arguments)

    async def changes(self) -> AsyncIterator[PricePanel]:
        """Each panel that an upstream message changed, as it changes."""
        names = list(dict.fromkeys(self.panels))
        async with connect(
            stream_url(self.upstream) + "?streams=" + "/".join(names), max_queue=None
        ) as ws:
            async for raw in ws:
                try:
                    message = parse(raw)
                except ParseError:
                    continue
                if not isinstance(message, Message):
                    continue
                panel = self.panels.get(message.stream or "")
                if panel is not None and panel.apply(message.payload):
                    yield panel


class _Viewer:
    __slots__ = ("closed", "pending", "wake")

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.closed = False


class _BareApp:
    """What both floors share: a lifespan that loads the market, runs `feed` and, at
    shutdown, stops it and ends every connection (`close_all`)."""

    market: Market
    task: asyncio.Task[None] | None

    async def feed(self) -> None:
        raise NotImplementedError

    def close_all(self) -> None:
        raise NotImplementedError

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.market.load()
                self.task = asyncio.create_task(self.feed())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.task is not None:
                    self.task.cancel()
                self.close_all()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Floor(_BareApp):
    """The bare ASGI floor."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.viewers: set[_Viewer] = set()
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.viewer(receive, send)

    def close_all(self) -> None:
        for v in self.viewers:
            v.closed = True
            v.wake.set()

    async def feed(self) -> None:
        market = self.market
        async for panel in market.changes():
            name = panel.topic.event
            data = sse_event(name, market.render(panel, market.arguments(panel)))
            for v in self.viewers:
                v.pending[name] = data
                v.wake.set()

    async def viewer(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        v = _Viewer()
        self.viewers.add(v)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            v.closed = True
            v.wake.set()

        watcher = asyncio.create_task(watch())
        try:
            while True:
                await v.wake.wait()
                v.wake.clear()
                if v.closed:
                    break
                chunk = b"".join(v.pending.values())
                v.pending.clear()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self.viewers.discard(v)
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Client:
    __slots__ = ("closed", "pending", "replies", "wake")

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}  # symbol -> its newest message
        self.replies: list[str] = []  # answers to the client's own messages, in order
        self.wake = asyncio.Event()
        self.closed = False


class WsFloor(_BareApp):
    """The bare ASGI floor for WebSocket clients of price messages."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.clients: dict[str, set[_Client]] = {s: set() for s in market.symbols}
        self.latest: dict[str, str] = {}  # symbol -> its newest message, encoded once
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self.client(receive, send)

    def close_all(self) -> None:
        for clients in self.clients.values():
            for c in clients:
                c.closed = True
                c.wake.set()

    async def feed(self) -> None:
        async for panel in self.market.changes():
            symbol = panel.topic.symbol
            text = _json.encode({**panel.data(), "stale": False}).decode()
            self.latest[symbol] = text
            for c in self.clients[symbol]:
                c.pending[symbol] = text
                c.wake.set()

    def subscribe(self, c: _Client, text: str) -> None:
        """A `subscribe` message: the answer first, then the current price of each symbol."""
        request = msgspec.json.decode(text)
        symbols = [s for s in request.get("symbols", []) if s in self.clients]
        for symbol in symbols:
            self.clients[symbol].add(c)
            if symbol in self.latest:
                c.pending[symbol] = self.latest[symbol]
        mine = [s for s, clients in self.clients.items() if c in clients]
        topics = [f"price:{s}" for s in mine]
        c.replies.append(
            _json.encode({"type": "subscribed", "symbols": mine, "topics": topics}).decode()
        )
        c.wake.set()

    async def client(self, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        c = _Client()
        c.replies.append(LIVE)  # as pricestream, the upstream's state comes first
        c.wake.set()

        async def read() -> None:
            while (message := await receive())["type"] == "websocket.receive":
                if message.get("text"):
                    self.subscribe(c, message["text"])
            c.closed = True
            c.wake.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await c.wake.wait()
                c.wake.clear()
                if c.closed:
                    break
                batch, c.replies = c.replies, []
                batch += c.pending.values()
                c.pending.clear()
                for text in batch:
                    await send({"type": "websocket.send", "text": text})
        except OSError:
            pass  # uvicorn's ClientDisconnected: the client left mid-send
        finally:
            for clients in self.clients.values():
                clients.discard(c)
            reader.cancel()
            await asyncio.wait([reader])


def common_app(market: Market) -> Starlette:
    """Starlette + sse-starlette, a queue per viewer, a render per viewer per update."""
    # What each viewer's queue holds: the panel and its template arguments at that update.
    queues: set[asyncio.Queue[tuple[PricePanel, dict[str, Any]]]] = set()

    async def feed() -> None:
        async for panel in market.changes():
            arguments = market.arguments(panel)
            for q in queues:
                q.put_nowait((panel, arguments))

    async def sse(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            q: asyncio.Queue[tuple[PricePanel, dict[str, Any]]] = asyncio.Queue()
            queues.add(q)
            try:
                while True:
                    panel, arguments = await q.get()
                    yield ServerSentEvent(
                        data=market.render(panel, arguments), event=panel.topic.event
                    )
            finally:
                queues.discard(q)

        return EventSourceResponse(events())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await market.load()
        task = asyncio.create_task(feed())
        yield
        task.cancel()

    return Starlette(routes=[Route("/sse", sse)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["floor", "wsfloor", "common"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()
    market = Market(args.upstream, args.rest, [m[0] for m in MARKET[: args.symbols]])
    apps = {"floor": Floor, "wsfloor": WsFloor, "common": common_app}
    app: Any = apps[args.kind](market)
    # pricestream's own uvicorn settings (backlog, WebSocket pings, no deflate, frame limit),
    # with the same automatic choices: httptools, uvloop, websockets' sans-I/O protocol.
    settings = Settings(host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn.Server(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
