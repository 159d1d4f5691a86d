"""The two comparison servers, run as `python -m bench.contenders floor|common --port P ...`.

- floor: a bare ASGI callable with no framework in between. It receives the same upstream,
  renders each update once (with pricestream's own parser and template), and hands the same SSE
  bytes to every viewer: a latest-value slot per symbol and a wake-up flag per viewer, one send
  per wake-up. It is what this design costs with nothing else on top.
- common: what people usually write. Starlette + sse-starlette, an unbounded asyncio.Queue per
  viewer, and a template render per viewer per update.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect

from app.binance import stream_url, streams_for
from app.config import Settings
from app.market import Frame, Quote, Trade, parse
from app.render import Renderer, sse_event
from app.simulation import MARKET
from app.symbols import SymbolDirectory

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]


class Market:
    """The upstream feed and the rendering both contenders share with pricestream."""

    def __init__(self, upstream: str, rest: str, symbols: list[str]) -> None:
        self.upstream, self.rest, self.symbols = upstream, rest, symbols
        self.renderer = Renderer()
        self.directory = SymbolDirectory(Settings(rest=rest))
        self.quotes = {s: Quote(s) for s in symbols}

    async def load(self) -> None:
        async with httpx.AsyncClient() as client:
            await self.directory.refresh(client)

    def render(self, quote: Quote) -> str:
        info = self.directory.info(quote.symbol)
        return self.renderer.fragment(
            "quote",
            quote=quote,
            stale=False,
            demo=False,
            decimals=info.decimals if info else None,
            quote_asset=info.quote if info else "",
        )

    async def frames(self) -> AsyncIterator[Frame]:
        names = [n for s in self.symbols for n in streams_for(s)]
        async with connect(
            stream_url(self.upstream) + "?streams=" + "/".join(names), max_queue=None
        ) as ws:
            async for raw in ws:
                item = parse(raw)
                if isinstance(item, Frame) and isinstance(item.event, Trade):
                    yield item

    def apply(self, frame: Frame) -> Quote | None:
        assert isinstance(frame.event, Trade)
        quote = self.quotes[frame.event.symbol].with_trade(frame.event)
        if quote is not None:
            self.quotes[quote.symbol] = quote
        return quote


class _Viewer:
    __slots__ = ("closed", "pending", "wake")

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.closed = False


class Floor:
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
                for v in self.viewers:
                    v.closed = True
                    v.wake.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def feed(self) -> None:
        async for frame in self.market.frames():
            quote = self.market.apply(frame)
            if quote is None:
                continue
            name = f"price-{quote.symbol}"
            data = sse_event(name, self.market.render(quote))
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


def common_app(market: Market) -> Starlette:
    """Starlette + sse-starlette, a queue per viewer, a render per viewer per update."""
    queues: set[asyncio.Queue[Quote]] = set()

    async def feed() -> None:
        async for frame in market.frames():
            quote = market.apply(frame)
            if quote is not None:
                for q in queues:
                    q.put_nowait(quote)

    async def sse(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            q: asyncio.Queue[Quote] = asyncio.Queue()
            queues.add(q)
            try:
                while True:
                    quote = await q.get()
                    yield ServerSentEvent(data=market.render(quote), event=f"price-{quote.symbol}")
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
    parser.add_argument("kind", choices=["floor", "common"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()
    market = Market(args.upstream, args.rest, [m[0] for m in MARKET[: args.symbols]])
    app: Any = Floor(market) if args.kind == "floor" else common_app(market)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=1,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
