"""Fan-out against the real simulator, without HTTP: render once, reference counts, conflation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.demo import DemoExchange
from app.hub import STATUS_EVENT, Hub
from app.render import Renderer
from app.rest import Rest
from app.subscriber import Subscriber
from app.symbols import SymbolDirectory
from app.topics.key import Topic, price
from app.topics.price import PricePanel
from tests.conftest import MS, WAIT, eventually, price_streams, root, settings_for

pytestmark = pytest.mark.anyio
BTC = (price("BTCUSDT"),)
BTC_EVENT = "price-BTCUSDT"


@contextlib.asynccontextmanager
async def running_hub(ex: DemoExchange, **overrides: Any) -> AsyncIterator[Hub]:
    settings = settings_for(ex, **overrides)
    directory = SymbolDirectory(settings)
    async with Rest(settings) as rest:
        assert await directory.refresh(rest)
        async with Hub(settings, directory, Renderer(), rest) as hub:
            yield hub


def card(hub: Hub, symbol: str = "BTCUSDT") -> PricePanel:
    panel = hub.entries[price(symbol)].panel
    assert isinstance(panel, PricePanel)
    return panel


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
    await eventually(lambda: ex.subscriptions() >= price_streams("BTCUSDT"))
    ex.ticker("BTCUSDT")
    await eventually(lambda: card(hub).has_data and hub.entries[BTC[0]].timer is None)
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
        assert fragments(first, STATUS_EVENT) and fragments(first, BTC_EVENT)
        assert "loading" in root(fragments(first, BTC_EVENT)[0]).classes
        await live_price(hub, exchange, viewers[0])
        for v in viewers:
            v.pending.clear()
        rendered = hub.events_rendered
        payload = exchange.trade("BTCUSDT", price="93600.00")
        await eventually(lambda: all(v.pending for v in viewers))
        assert hub.events_rendered == rendered + 1
        # Every viewer holds the very same bytes object: encoded once, shared by all.
        shared = viewers[0].pending[BTC_EVENT]
        assert all(v.pending[BTC_EVENT] is shared for v in viewers)
        article = root(fragments(await chunk(viewers[0]), BTC_EVENT)[0])
        assert article.attrs["data-price"] == payload["p"]
        assert article.attrs["data-event-time"] == str(payload["E"])
        for v in viewers:
            hub.unsubscribe(v)


async def test_last_viewer_leaving_unsubscribes_after_the_grace_period(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange, grace_period=0.5) as hub:
        a, b = hub.subscribe(BTC), hub.subscribe((*BTC, price("ETHUSDT")))
        both = price_streams("BTCUSDT") | price_streams("ETHUSDT")
        await eventually(lambda: exchange.subscriptions() == both)
        hub.unsubscribe(b)
        await asyncio.sleep(0.5 + 300 * MS)
        # ETH had one viewer, now gone; BTC still has one.
        assert exchange.subscriptions() == price_streams("BTCUSDT")
        hub.unsubscribe(a)
        await asyncio.sleep(200 * MS)
        assert exchange.subscriptions() == price_streams("BTCUSDT"), "gone before the grace"
        c = hub.subscribe(BTC)  # back within the grace period: nothing churns upstream
        await asyncio.sleep(0.5 + 300 * MS)
        assert exchange.subscriptions() == price_streams("BTCUSDT")
        hub.unsubscribe(c)
        await eventually(lambda: not exchange.peers)
        assert hub.entries == {} and BTC_EVENT not in hub.encoded
        unsubscribed = [
            m["params"] for _, m in exchange.control_log if m.get("method") == "UNSUBSCRIBE"
        ]
        assert unsubscribed == [sorted(price_streams("ETHUSDT"))]


async def test_slow_viewer_gets_only_the_latest_and_never_delays_others(
    exchange: DemoExchange,
) -> None:
    # No flush interval: the fast viewer is then woken for each of the trades, 2 ms apart.
    async with running_hub(exchange, flush_interval=0.0, render_interval=0.0) as hub:
        slow, fast = hub.subscribe(BTC), hub.subscribe(BTC)
        await live_price(hub, exchange, fast)
        slow.pending.clear()
        seen: list[str] = []

        async def read_fast() -> None:
            while len(seen) < 50:
                for html in fragments(await chunk(fast), BTC_EVENT):
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
        assert set(slow.pending) == {BTC_EVENT}
        latest = fragments(await chunk(slow), BTC_EVENT)
        assert [root(h).attrs["data-price"] for h in latest] == [sent[-1]]


async def test_a_busy_topic_is_rendered_at_a_human_rate_ending_on_the_newest(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange, render_interval=0.5) as hub:
        sub = hub.subscribe(BTC)
        await live_price(hub, exchange, sub)
        await asyncio.sleep(0.5)  # the first trade below then goes out at once
        rendered = hub.events_rendered
        sent = [exchange.trade("BTCUSDT")["p"] for _ in range(100)]
        first = fragments(await chunk(sub), BTC_EVENT)
        last = fragments(await chunk(sub), BTC_EVENT)
        # 100 trades in a burst: the first at once, the rest as one render after the interval.
        assert len(first) == len(last) == 1
        assert root(last[0]).attrs["data-price"] == sent[-1]
        await asyncio.sleep(0.6)
        assert hub.events_rendered - rendered == 2


async def test_panels_sharing_a_stream_never_drop_it_from_under_each_other(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange, grace_period=0.1) as hub:
        card_viewer = hub.subscribe(BTC)
        book_viewer = hub.subscribe([Topic("book", "BTCUSDT")])
        both = price_streams("BTCUSDT") | {"btcusdt@depth20@100ms"}
        await eventually(lambda: exchange.subscriptions() == both)
        hub.unsubscribe(card_viewer)
        # The ticker is the card's and the book's heartbeat: it stays while the book is open.
        await eventually(
            lambda: exchange.subscriptions() == {"btcusdt@ticker", "btcusdt@depth20@100ms"}
        )
        await asyncio.sleep(0.3)
        assert "btcusdt@ticker" in exchange.subscriptions()
        hub.unsubscribe(book_viewer)
        await eventually(lambda: not exchange.peers)


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
        prices = [root(h).attrs["data-price"] for h in fragments(data, BTC_EVENT)]
        assert prices == ["94001.00000000"]
        assert card(hub).quote.price == "94001.00000000"


async def test_silence_turns_stale_and_recovers(exchange: DemoExchange) -> None:
    async with running_hub(exchange, stall_timeout=0.6) as hub:
        sub = hub.subscribe(BTC)
        await live_price(hub, exchange, sub)
        # No data for the stall limit: viewers get a stale fragment without asking.
        stale = await chunk(sub)
        article = root(fragments(stale, BTC_EVENT)[-1])
        assert "stale" in article.classes
        assert hub.health()["stale"] == ["price:BTCUSDT"]
        await feed_until(exchange, lambda: not hub.entries[BTC[0]].stale)
        fresh = fragments(await chunk(sub), BTC_EVENT)
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
        stale = fragments(data, BTC_EVENT)
        assert stale and "stale" in root(stale[-1]).classes
        await feed_until(exchange, lambda: not hub.entries[BTC[0]].stale)
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


async def test_a_fragment_waiting_for_data_ends_when_the_server_drains(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange) as hub:
        waiting = asyncio.create_task(hub.fragment(Topic("book", "BTCUSDT"), wait=30.0))
        await eventually(lambda: Topic("book", "BTCUSDT") in hub.entries)
        await asyncio.sleep(0.1)
        hub.drain()
        async with asyncio.timeout(2.0):  # not the 30 s it was willing to wait
            html = await waiting
        assert "loading" in root(html).classes


async def test_programs_alone_cost_no_html_and_a_viewer_joining_gets_the_current_card(
    exchange: DemoExchange,
) -> None:
    async with running_hub(exchange, render_interval=0.0) as hub:
        program = hub.subscribe(BTC, transport="ws")
        await live_price(hub, exchange, program)
        rendered, encoded = hub.events_rendered, hub.json_encoded
        for price in ("93000.10", "93000.20", "93000.30"):
            exchange.trade("BTCUSDT", price=price)
        await eventually(lambda: hub.json_encoded == encoded + 3)
        assert hub.events_rendered == rendered  # no HTML for nobody
        assert '"price":"93000.30000000"' in program.pending[BTC_EVENT]
        viewer = hub.subscribe(BTC)
        card = fragments(await chunk(viewer), BTC_EVENT)
        assert [root(html).attrs["data-price"] for html in card] == ["93000.30000000"]
        hub.unsubscribe(viewer)
        hub.unsubscribe(program)
