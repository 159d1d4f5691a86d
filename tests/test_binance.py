"""The upstream client against the real simulator: subscribe, batch, shard, recover, rotate."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from app.binance import State, Upstream, retry_delay, stream_url
from app.config import Settings
from app.demo import DemoExchange
from app.market import Message, Trade
from tests.conftest import MS, WAIT, eventually, price_streams, settings_for

pytestmark = pytest.mark.anyio


class Feed:
    """An Upstream plus everything it delivered."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.frames: list[Message] = []
        self.states: list[State] = []

    def trades(self, symbol: str) -> list[Trade]:
        return [
            f.payload
            for f in self.frames
            if isinstance(f.payload, Trade) and f.payload.symbol == symbol
        ]


@contextlib.asynccontextmanager
async def feed(ex: DemoExchange, **overrides: Any) -> AsyncIterator[Feed]:
    holder: list[Feed] = []
    up = Upstream(
        settings_for(ex, **overrides),
        lambda f: holder[0].frames.append(f),
        lambda: holder[0].states.append(holder[0].upstream.state),
    )
    holder.append(Feed(up))
    async with up:
        yield holder[0]


def subscribe_log(ex: DemoExchange) -> list[tuple[float, dict[str, Any]]]:
    return [(t, m) for t, m in ex.control_log if m.get("method") in ("SUBSCRIBE", "UNSUBSCRIBE")]


def test_stream_names_and_url() -> None:
    for base in (
        "wss://stream.binance.com:9443",
        "wss://stream.binance.com:9443/",
        "wss://stream.binance.com:9443/ws",
        "wss://stream.binance.com:9443/stream",
    ):
        assert stream_url(base) == "wss://stream.binance.com:9443/stream"


async def test_subscribe_receive_unsubscribe_and_close(exchange: DemoExchange) -> None:
    async with feed(exchange) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == {"btcusdt@trade", "btcusdt@ticker"})
        payload = exchange.trade("BTCUSDT")
        await eventually(lambda: len(f.trades("BTCUSDT")) == 1)
        trade = f.trades("BTCUSDT")[0]
        assert (trade.price, trade.trade_id, trade.event_time) == (
            payload["p"],
            payload["t"],
            payload["E"],
        )
        assert f.frames[0].stream == "btcusdt@trade"
        assert f.upstream.state == State.LIVE
        f.upstream.unwant(price_streams("BTCUSDT"))
        # Nothing wanted: the streams go, and so does the connection itself.
        await eventually(lambda: not exchange.peers)
        await eventually(lambda: f.upstream.state == State.IDLE)
    assert [m["method"] for _, m in subscribe_log(exchange)] == ["SUBSCRIBE"]


async def test_changes_are_batched_and_paced(exchange: DemoExchange) -> None:
    names = [f"sym{i:03d}usdt@trade" for i in range(450)]
    async with feed(exchange, control_rate=4.0) as f:
        f.upstream.want(names[:1])
        await eventually(lambda: exchange.subscriptions() == {names[0]})
        for name in names[1:]:
            f.upstream.want([name])  # one by one, as viewers would arrive
        await eventually(lambda: exchange.subscriptions() == set(names), timeout=WAIT)
        f.upstream.unwant(names[10:])
        await eventually(lambda: exchange.subscriptions() == set(names[:10]))
    log = subscribe_log(exchange)
    sizes = [(m["method"], len(m["params"])) for _, m in log]
    assert sizes == [
        ("SUBSCRIBE", 1),
        ("SUBSCRIBE", 200),
        ("SUBSCRIBE", 200),
        ("SUBSCRIBE", 49),
        ("UNSUBSCRIBE", 200),
        ("UNSUBSCRIBE", 200),
        ("UNSUBSCRIBE", 40),
    ]
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(log)]
    assert min(gaps) >= 0.25 - 0.01  # 4 a second at most (the simulator closes us past 5)
    assert exchange.connection_attempts == 1
    assert all(len(json.dumps(m)) < 8000 for _, m in log)


async def test_shards_past_the_stream_cap(exchange: DemoExchange) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"]
    async with feed(exchange, streams_per_connection=4) as f:
        for s in symbols:
            f.upstream.want(price_streams(s))
        wanted = {n for s in symbols for n in price_streams(s)}
        await eventually(lambda: exchange.subscriptions() == wanted)
        assert len(exchange.peers) == 3
        assert all(len(p.streams) <= 4 for p in exchange.peers)
        for s in symbols:
            exchange.trade(s)
        await eventually(lambda: all(f.trades(s) for s in symbols))
        assert f.upstream.connections() == 3


async def test_reconnects_and_resubscribes_after_a_reset(exchange: DemoExchange) -> None:
    async with feed(exchange) as f:
        f.upstream.want([*price_streams("BTCUSDT"), *price_streams("ETHUSDT")])
        await eventually(lambda: len(exchange.subscriptions()) == 4)
        exchange.trade("BTCUSDT")
        await eventually(lambda: len(f.trades("BTCUSDT")) == 1)
        exchange.reset_connections()  # TCP reset, no close frame
        await eventually(lambda: f.upstream.reconnects == 1)
        await eventually(lambda: len(exchange.subscriptions()) == 4)
        exchange.trade("ETHUSDT")
        await eventually(lambda: len(f.trades("ETHUSDT")) == 1)
        assert f.upstream.state == State.LIVE
        assert State.RECONNECTING in f.states


async def test_refused_handshakes_back_off_then_recover(exchange: DemoExchange) -> None:
    exchange.refuse_next(4, 503)
    async with feed(exchange, backoff_initial=0.05, backoff_max=1.0) as f:
        started = time.monotonic()
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        elapsed = time.monotonic() - started
        assert exchange.connection_attempts == 5
        # Four failures wait at least half of 0.05, 0.1, 0.2 and 0.4 s: backoff, not a hot loop.
        assert elapsed >= (0.05 + 0.1 + 0.2 + 0.4) / 2
        assert State.DOWN in f.states  # three failures in a row read "down"
        exchange.trade("BTCUSDT")
        await eventually(lambda: f.upstream.state == State.LIVE)
        assert f.upstream.last_error == "HTTP 503 on connect"


async def test_451_says_where_to_go(exchange: DemoExchange) -> None:
    exchange.refuse_next(
        1, 451, '{"code":0,"msg":"Service unavailable from a restricted location"}'
    )
    async with feed(exchange, backoff_max=0.3) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: State.DOWN in f.states)
        assert f.upstream.last_error is not None
        assert "stream.binance.us" in f.upstream.last_error
        # Still retrying: a refusal is loud, never the end of the feed.
        await eventually(lambda: f.upstream.state == State.CONNECTING or exchange.peers != [])


async def test_silent_connection_is_replaced(exchange: DemoExchange) -> None:
    async with feed(exchange, stall_timeout=0.5) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        exchange.trade("BTCUSDT")
        await eventually(lambda: f.upstream.state == State.LIVE)
        exchange.stall()  # open, answering pings, but no data
        await eventually(lambda: f.upstream.reconnects >= 1)
        assert f.upstream.last_error is not None and "no data" in f.upstream.last_error
        exchange.stall(False)
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        exchange.trade("BTCUSDT")
        await eventually(lambda: len(f.trades("BTCUSDT")) == 2)


async def test_bad_frames_are_skipped(exchange: DemoExchange) -> None:
    async with feed(exchange) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        for raw in (
            "garbage",
            "[1,2]",
            '{"e":"trade"}',
            '{"stream":"x","data":{"e":"what"}}',
            '{"result":null,"id":999999}',
            '{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"NaN","q":"1","T":1,"m":true,"M":true}',
        ):
            exchange.send_raw(raw)
        exchange.trade("BTCUSDT")
        await eventually(lambda: len(f.trades("BTCUSDT")) == 1)
        assert f.upstream.bad_frames == 5
        assert f.upstream.reconnects == 0


async def test_error_reply_to_subscribe_is_retried(exchange: DemoExchange) -> None:
    exchange.fail_next_subscribes(1)
    async with feed(exchange) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        assert [m["method"] for _, m in subscribe_log(exchange)] == ["SUBSCRIBE", "SUBSCRIBE"]
        assert f.upstream.last_error == "SUBSCRIBE failed: Invalid request: invalid stream"
        exchange.trade("BTCUSDT")
        await eventually(lambda: len(f.trades("BTCUSDT")) == 1)


async def _rotation_loses_nothing(
    exchange: DemoExchange, f: Feed, trigger: Callable[[], None]
) -> None:
    f.upstream.want(price_streams("BTCUSDT"))
    await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
    most_peers = 0
    sent: list[int] = []
    trigger()
    deadline = time.monotonic() + WAIT
    while f.upstream.rotations == 0 and time.monotonic() < deadline:
        sent.append(exchange.trade("BTCUSDT")["t"])
        most_peers = max(most_peers, len(exchange.peers))
        await asyncio.sleep(10 * MS)
    for _ in range(5):
        sent.append(exchange.trade("BTCUSDT")["t"])
        await asyncio.sleep(10 * MS)
    await eventually(lambda: {t.trade_id for t in f.trades("BTCUSDT")} >= set(sent))
    assert f.upstream.rotations == 1
    assert most_peers == 2  # the new connection opened before the old one closed
    await eventually(lambda: len(exchange.peers) == 1)
    assert f.upstream.reconnects == 0


async def test_server_shutdown_notice_rotates_without_a_gap(exchange: DemoExchange) -> None:
    async with feed(exchange) as f:
        await _rotation_loses_nothing(exchange, f, exchange.server_shutdown)


async def test_rotation_before_the_24h_cut_without_a_gap(exchange: DemoExchange) -> None:
    async with feed(exchange, rotate_after=1.0) as f:
        await _rotation_loses_nothing(exchange, f, lambda: None)


async def test_close_1001_reconnects_at_once(exchange: DemoExchange) -> None:
    async with feed(exchange, backoff_initial=5.0, backoff_max=10.0) as f:
        f.upstream.want(price_streams("BTCUSDT"))
        await eventually(lambda: exchange.subscriptions() == (price_streams("BTCUSDT")))
        exchange.trade("BTCUSDT")
        await eventually(lambda: f.upstream.state == State.LIVE)
        await exchange.drop_connections(1001, "24h")
        # A 5 s backoff would blow this 2 s budget: the 24 h cut is routine, not a failure.
        await eventually(
            lambda: f.upstream.reconnects == 1 and len(exchange.subscriptions()) == 2, timeout=2.0
        )


def test_retry_policy() -> None:
    settings = Settings(backoff_initial=1.0, backoff_max=60.0)

    def status(code: int, **headers: str) -> InvalidStatus:
        return InvalidStatus(Response(code, "x", Headers(headers)))

    assert retry_delay(status(429, **{"Retry-After": "120"}), 0, settings)[0] == 120.0
    assert retry_delay(status(418), 0, settings)[0] == 60.0
    assert retry_delay(status(451), 0, settings)[0] == 60.0
    for failures in range(10):
        delay, _ = retry_delay(OSError("refused"), failures, settings)
        ceiling = min(60.0, 2.0**failures)
        assert ceiling / 2 <= delay <= ceiling
