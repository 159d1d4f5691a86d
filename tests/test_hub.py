"""Fan-out against the real simulator, without HTTP: render once, reference counts, conflation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.binance import streams_for
from app.demo import DemoExchange
from app.hub import STATUS_EVENT, Hub, Subscriber, price_event
from app.render import Renderer
from app.symbols import SymbolDirectory
from tests.conftest import MS, WAIT, root, settings_for
from tests.test_binance import eventually

pytestmark = pytest.mark.anyio
BTC = ("BTCUSDT",)


@contextlib.asynccontextmanager
async def running_hub(ex: DemoExchange, **overrides: Any) -> AsyncIterator[Hub]:
    settings = settings_for(ex, **overrides)
    directory = SymbolDirectory(settings)
    async with httpx.AsyncClient() as client:
        assert await directory.refresh(client)
    async with Hub(settings, directory, Renderer()) as hub:
        yield hub


async def chunk(sub: Subscriber) -> bytes:
    async with asyncio.timeout(WAIT):
        data = await sub.next_chunk()
    assert data is not None
    return data


def fragments(data: bytes, event: str) -> list[str]:
    """The data lines of every `event` in an SSE chunk."""
    out = []
    for block in data.decode().split("\r\n\r\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\r\n") if ": " in line)
        if lines.get("event") == event:
            out.append(lines["data"])
    return out


async def live_price(hub: Hub, ex: DemoExchange, sub: Subscriber) -> None:
    """Wait until the upstream serves BTCUSDT, and drain `sub`."""
    await eventually(lambda: ex.subscriptions() >= set(streams_for("BTCUSDT")))
    ex.ticker("BTCUSDT")
    await eventually(lambda: hub.symbols["BTCUSDT"].quote.has_price)
    sub.pending.clear()


async def feed_until(ex: DemoExchange, done: Callable[[], bool]) -> None:
    """Trade every 20 ms until `done()`: the quiet simulator otherwise sends nothing at all."""
    async with asyncio.timeout(WAIT):
        while not done():
            if ex.peers:
                ex.trade("BTCUSDT")
            await asyncio.sleep(20 * MS)


async def test_snapshot_then_updates_rendered_once_for_every_viewer(exchange: DemoExchange) -> None:
    async with running_hub(exchange) as hub:
        viewers = [hub.subscribe(BTC) for _ in range(200)]
        first = await chunk(viewers[0])
        assert fragments(first, STATUS_EVENT) and fragments(first, price_event("BTCUSDT"))
        assert "loading" in root(fragments(first, price_event("BTCUSDT"))[0]).classes
        await live_price(hub, exchange, viewers[0])
        for v in viewers:
            v.pending.clear()
        rendered = hub.events_rendered
        payload = exchange.trade("BTCUSDT", price="93600.00")
        await eventually(lambda: all(v.pending for v in viewers))
        assert hub.events_rendered == rendered + 1
        # Every viewer holds the very same bytes object: encoded once, shared by all.
        shared = viewers[0].pending[price_event("BTCUSDT")]
        assert all(v.pending[price_event("BTCUSDT")] is shared for v in viewers)
        article = root(fragments(await chunk(viewers[0]), price_event("BTCUSDT"))[0])
        assert article.attrs["data-price"] == payload["p"]
        assert article.attrs["data-event-time"] == str(payload["E"])
        for v in viewers:
            hub.unsubscribe(v)


async def test_last_viewer_leaving_unsubscribes_after_the_grace_period(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange, grace_period=0.5) as hub:
        a, b = hub.subscribe(BTC), hub.subscribe(("BTCUSDT", "ETHUSDT"))
        both = set(streams_for("BTCUSDT")) | set(streams_for("ETHUSDT"))
        await eventually(lambda: exchange.subscriptions() == both)
        hub.unsubscribe(b)
        await asyncio.sleep(0.5 + 300 * MS)
        # ETH had one viewer, now gone; BTC still has one.
        assert exchange.subscriptions() == set(streams_for("BTCUSDT"))
        hub.unsubscribe(a)
        await asyncio.sleep(200 * MS)
        assert exchange.subscriptions() == set(streams_for("BTCUSDT")), "gone before the grace"
        c = hub.subscribe(BTC)  # back within the grace period: nothing churns upstream
        await asyncio.sleep(0.5 + 300 * MS)
        assert exchange.subscriptions() == set(streams_for("BTCUSDT"))
        hub.unsubscribe(c)
        await eventually(lambda: not exchange.peers)
        assert hub.symbols == {} and price_event("BTCUSDT") not in hub.frames
        unsubscribed = [
            m["params"] for _, m in exchange.control_log if m.get("method") == "UNSUBSCRIBE"
        ]
        assert unsubscribed == [sorted(streams_for("ETHUSDT"))]


async def test_slow_viewer_gets_only_the_latest_and_never_delays_others(
    exchange: DemoExchange,
) -> None:
    # No flush interval: the fast viewer is then woken for each of the trades, 2 ms apart.
    async with running_hub(exchange, flush_interval=0.0) as hub:
        slow, fast = hub.subscribe(BTC), hub.subscribe(BTC)
        await live_price(hub, exchange, fast)
        slow.pending.clear()
        seen: list[str] = []

        async def read_fast() -> None:
            while len(seen) < 50:
                for html in fragments(await chunk(fast), price_event("BTCUSDT")):
                    seen.append(root(html).attrs["data-price"] or "")

        reader = asyncio.create_task(read_fast())
        sent = []
        for _ in range(50):
            sent.append(exchange.trade("BTCUSDT")["p"])
            await asyncio.sleep(2 * MS)
        async with asyncio.timeout(WAIT):
            await reader
        assert seen[-1] == sent[-1] and len(seen) == 50
        # The slow viewer never read: it holds one slot per event, the newest.
        assert set(slow.pending) == {price_event("BTCUSDT")}
        latest = fragments(await chunk(slow), price_event("BTCUSDT"))
        assert [root(h).attrs["data-price"] for h in latest] == [sent[-1]]


async def test_out_of_order_trade_does_not_move_the_price(exchange: DemoExchange) -> None:
    async with running_hub(exchange) as hub:
        sub = hub.subscribe(BTC)
        await live_price(hub, exchange, sub)
        newer = exchange.trade("BTCUSDT", price="94000.00")
        await eventually(lambda: bool(sub.pending))
        sub.pending.clear()
        older = {**newer, "t": newer["t"] - 1, "p": "1.00", "E": newer["E"] - 5}
        exchange.publish("btcusdt@trade", older)
        exchange.trade("BTCUSDT", price="94001.00")
        data = await chunk(sub)
        prices = [root(h).attrs["data-price"] for h in fragments(data, price_event("BTCUSDT"))]
        assert prices == ["94001.00000000"]
        assert hub.symbols["BTCUSDT"].quote.price == "94001.00000000"


async def test_silence_turns_stale_and_recovers(exchange: DemoExchange) -> None:
    async with running_hub(exchange, stall_timeout=0.6) as hub:
        sub = hub.subscribe(BTC)
        await live_price(hub, exchange, sub)
        # No data for the stall limit: viewers get a stale fragment without asking.
        stale = await chunk(sub)
        article = root(fragments(stale, price_event("BTCUSDT"))[-1])
        assert "stale" in article.classes
        assert hub.health()["stale"] == ["BTCUSDT"]
        await feed_until(exchange, lambda: not hub.symbols["BTCUSDT"].stale)
        fresh = fragments(await chunk(sub), price_event("BTCUSDT"))
        assert "stale" not in root(fresh[-1]).classes


async def test_upstream_loss_is_told_to_viewers(exchange: DemoExchange) -> None:
    async with running_hub(exchange, backoff_initial=0.3, backoff_max=0.6) as hub:
        sub = hub.subscribe(BTC)
        await live_price(hub, exchange, sub)
        exchange.refuse_next(1, 503)
        exchange.reset_connections()
        data = b""
        async with asyncio.timeout(WAIT):
            while not any("upstream-reconnecting" in h for h in fragments(data, STATUS_EVENT)):
                data = await chunk(sub)
        stale = fragments(data, price_event("BTCUSDT"))
        assert stale and "stale" in root(stale[-1]).classes
        await feed_until(exchange, lambda: not hub.symbols["BTCUSDT"].stale)
        assert hub.health()["status"] == "ok"
        assert hub.health()["upstream"]["reconnects"] >= 1


async def test_closing_the_hub_ends_every_viewer(exchange: DemoExchange) -> None:
    async with running_hub(exchange) as hub:
        subs = [hub.subscribe(BTC) for _ in range(3)]
        for s in subs:
            await chunk(s)
    for s in subs:
        async with asyncio.timeout(WAIT):
            assert await s.next_chunk() is None
