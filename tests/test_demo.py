"""The demo exchange speaks Binance's wire protocol: streams, control messages and REST, with
klines, books and aggregate trades that agree with its own prices."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.demo import DemoExchange
from app.simulation import DAY_MS, now_ms
from tests.conftest import MS, WAIT

pytestmark = pytest.mark.anyio

MINUTE_MS = 60_000
TICK, STEP = Decimal("0.01"), Decimal("0.00001")  # BTCUSDT's tick size and lot step


async def recv(ws: ClientConnection) -> Any:
    async with asyncio.timeout(WAIT):
        return json.loads(await ws.recv())


@pytest.fixture
async def quiet() -> AsyncIterator[DemoExchange]:
    """An exchange that sends nothing unless a control is called (natural candle closes aside)."""
    async with DemoExchange(
        trades_per_second=0, ticker_interval=3600, kline_interval=3600, depth_interval=3600, seed=7
    ) as ex:
        yield ex


@contextlib.asynccontextmanager
async def listen(ex: DemoExchange, *streams: str) -> AsyncIterator[ClientConnection]:
    """A combined-stream connection to `ex`, subscribed to `streams` by the time it is yielded."""
    async with connect(ex.ws_url + "/stream?streams=" + "/".join(streams)) as ws:
        async with asyncio.timeout(WAIT):
            while not ex.subscriptions() >= set(streams):
                await asyncio.sleep(5 * MS)
        yield ws


async def rest(ex: DemoExchange, path: str, **params: str | int) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ex.rest_url, timeout=WAIT) as client:
        return await client.get(path, params=params)


def as_row(k: dict[str, Any]) -> list[Any]:
    """A stream kline's `k` in the REST array form."""
    fields = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")
    return [*(k[f] for f in fields), "0"]


def check_book(book: dict[str, Any], last: Decimal) -> None:
    """Best levels first, on both sides of `last`, tick-spaced, quantities in whole lot steps."""
    assert set(book) == {"lastUpdateId", "bids", "asks"}
    for side in (book["bids"], book["asks"]):
        for price, qty in side:
            assert len(price.split(".")[1]) == len(qty.split(".")[1]) == 8
            assert Decimal(price) % TICK == 0 and Decimal(qty) % STEP == 0 and Decimal(qty) > 0
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert bids[0] <= last - TICK and asks[0] >= last
    assert all(a > b for a, b in itertools.pairwise(bids))
    assert all(a < b for a, b in itertools.pairwise(asks))


async def test_control_messages_and_replies(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        await ws.send(
            json.dumps(
                {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@ticker"], "id": 1}
            )
        )
        assert await recv(ws) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await recv(ws) == {"result": ["btcusdt@ticker", "btcusdt@trade"], "id": 2}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@ticker"], "id": 3}))
        assert await recv(ws) == {"result": None, "id": 3}
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 4}))
        assert await recv(ws) == {"result": True, "id": 4}
        await asyncio.sleep(1100 * MS)  # stay under 5 messages a second
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 5}))
        assert await recv(ws) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 5,
        }
        await ws.send(json.dumps({"method": "FROB", "id": 6}))
        reply = await recv(ws)
        assert reply["id"] == 6 and reply["error"]["code"] == 2
        await ws.send("{not json")
        assert (await recv(ws))["error"]["code"] == 3
        # A well-formed name for a symbol that does not exist is accepted, and stays silent.
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["foousdt@trade"], "id": 7}))
        assert await recv(ws) == {"result": None, "id": 7}


async def test_combined_and_raw_payloads(exchange: DemoExchange) -> None:
    async with (
        connect(exchange.ws_url + "/stream?streams=btcusdt@trade") as combined,
        connect(exchange.ws_url + "/ws/btcusdt@trade?timeUnit=MICROSECOND") as raw,
    ):
        async with asyncio.timeout(WAIT):
            while len(exchange.peers) < 2:
                await asyncio.sleep(5 * MS)
        payload = exchange.trade("BTCUSDT")
        wrapped = await recv(combined)
        assert wrapped == {"stream": "btcusdt@trade", "data": payload}
        assert set(payload) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
        unwrapped = await recv(raw)
        assert unwrapped["E"] == payload["E"] * 1000 and unwrapped["p"] == payload["p"]


async def test_all_simulated_payloads_have_every_field() -> None:
    async with DemoExchange(
        trades_per_second=20, ticker_interval=0.2, kline_interval=0.2, seed=1
    ) as ex:
        names = [
            "ethusdt@trade",
            "ethusdt@aggTrade",
            "ethusdt@ticker",
            "ethusdt@miniTicker",
            "ethusdt@bookTicker",
            "ethusdt@kline_5m",
            "ethusdt@depth10@100ms",
        ]
        async with connect(ex.ws_url + "/stream?streams=" + "/".join(names)) as ws:
            seen: dict[str, set[str]] = {}
            async with asyncio.timeout(WAIT):
                while len(seen) < len(names):
                    msg = await recv(ws)
                    seen[msg["stream"]] = set(msg["data"])
    assert seen["ethusdt@aggTrade"] == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
    assert seen["ethusdt@ticker"] == set("eEspPwxcQbBaAohlvqOCFLn")
    assert seen["ethusdt@miniTicker"] == set("eEscohlvq")
    assert seen["ethusdt@bookTicker"] == set("usbBaA")
    assert seen["ethusdt@kline_5m"] == {"e", "E", "s", "k"}
    assert seen["ethusdt@depth10@100ms"] == {"lastUpdateId", "bids", "asks"}


async def test_rate_limit_closes_with_1008(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "Too many requests")


async def test_stream_cap_answers_code_4(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        names = [f"s{i}usdt@trade" for i in range(1025)]
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
        assert await recv(ws) == {"error": {"code": 4, "msg": "Too many subscriptions"}, "id": 1}


async def test_refusals_and_shutdown_notice(exchange: DemoExchange) -> None:
    exchange.refuse_next(
        1, 451, '{"code":0,"msg":"Service unavailable from a restricted location"}'
    )
    with pytest.raises(InvalidStatus) as info:
        await connect(exchange.ws_url + "/stream")
    assert info.value.response.status_code == 451
    async with connect(exchange.ws_url + "/stream") as ws:
        async with asyncio.timeout(WAIT):
            while not exchange.peers:
                await asyncio.sleep(5 * MS)
        exchange.server_shutdown()
        msg = await recv(ws)
        assert msg["stream"] == "!serverShutdown" and msg["data"]["e"] == "serverShutdown"


async def test_rest_exchange_info(exchange: DemoExchange) -> None:
    async with httpx.AsyncClient(base_url=exchange.rest_url, timeout=WAIT) as client:
        info = (await client.get("/api/v3/exchangeInfo")).json()
        missing = await client.get("/api/v3/nothing")
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["status"] == "TRADING" and btc["quoteAsset"] == "USDT"
    assert {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.01000000",
        "maxPrice": "1000000.00000000",
        "tickSize": "0.01000000",
    } in btc["filters"]
    assert missing.status_code == 404


# -- klines ---------------------------------------------------------------------------------------
# Tests that compare candles first call `close_candle`: the next candle then opens on the next
# minute and closes more than a minute from now, so no natural close can slip in between.


async def test_rest_klines_are_a_consistent_history(quiet: DemoExchange) -> None:
    before = now_ms()
    response = await rest(quiet, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=1000)
    after = now_ms()
    assert response.status_code == 200
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    rows = response.json()
    assert len(rows) == 1000
    for t, o, h, low, c, v, close_time, q, n, taker_v, taker_q, ignore in rows:
        assert close_time == t + MINUTE_MS - 1 and ignore == "0" and n >= 0
        prices = [Decimal(p) for p in (o, h, low, c)]
        assert all(p % TICK == 0 for p in prices)
        assert Decimal(low) <= min(prices) and Decimal(h) >= max(prices)
        volume, quote = Decimal(v), Decimal(q)
        assert volume % STEP == 0 and Decimal(taker_v) % STEP == 0
        assert Decimal(taker_v) <= volume and Decimal(taker_q) <= quote
        assert volume * Decimal(low) - STEP <= quote <= volume * Decimal(h) + STEP
    for older, newer in itertools.pairwise(rows):
        assert newer[0] == older[0] + MINUTE_MS and newer[1] == older[4]
    # The last candle is forming: it opened on this minute and closes at the current price.
    assert before // MINUTE_MS * MINUTE_MS <= rows[-1][0] <= after // MINUTE_MS * MINUTE_MS
    assert rows[-1][4] == f"{quiet.market.instruments['BTCUSDT'].price:.8f}"

    hours = (await rest(quiet, "/api/v3/klines", symbol="BTCUSDT", interval="1h")).json()
    assert len(hours) == 500  # Binance's default limit
    window = await rest(
        quiet,
        "/api/v3/klines",
        symbol="BTCUSDT",
        interval="1m",
        startTime=rows[10][0],
        endTime=rows[14][0],
    )
    assert window.json() == rows[10:15]


async def test_weeks_and_months_follow_the_calendar(quiet: DemoExchange) -> None:
    weeks = (await rest(quiet, "/api/v3/klines", symbol="ETHBTC", interval="1w", limit=5)).json()
    for row in weeks:
        opened = datetime.fromtimestamp(row[0] / 1000, UTC)
        assert (opened.weekday(), opened.hour, opened.minute) == (0, 0, 0)  # Monday 00:00 UTC
        assert row[6] == row[0] + 7 * DAY_MS - 1
    months = (await rest(quiet, "/api/v3/klines", symbol="ETHBTC", interval="1M", limit=13)).json()
    for older, newer in itertools.pairwise(months):
        opened = datetime.fromtimestamp(older[0] / 1000, UTC)
        following = datetime.fromtimestamp(newer[0] / 1000, UTC)
        assert (opened.day, opened.hour, following.day) == (1, 0, 1)
        assert following.month == opened.month % 12 + 1 and older[6] == newer[0] - 1


async def test_rest_candle_is_what_the_stream_sends_next(quiet: DemoExchange) -> None:
    quiet.close_candle("BTCUSDT", "1m")
    async with listen(quiet, "btcusdt@kline_1m") as ws:
        rows = (await rest(quiet, "/api/v3/klines", symbol="BTCUSDT", interval="1m")).json()
        sent = quiet.kline("BTCUSDT", "1m")
        assert await recv(ws) == {"stream": "btcusdt@kline_1m", "data": sent}
    k = sent["k"]
    assert set(sent) == {"e", "E", "s", "k"} and set(k) == set("tTsifLochlvnxqVQB")
    assert (sent["e"], sent["s"], k["s"], k["i"], k["x"]) == (
        "kline",
        "BTCUSDT",
        "BTCUSDT",
        "1m",
        False,
    )
    assert rows[-1] == as_row(k)


async def test_kline_times_follow_time_unit(quiet: DemoExchange) -> None:
    async with connect(quiet.ws_url + "/ws/btcusdt@kline_1h?timeUnit=MICROSECOND") as raw:
        async with asyncio.timeout(WAIT):
            while not quiet.peers:
                await asyncio.sleep(5 * MS)
        sent = quiet.kline("BTCUSDT", "1h")
        got = await recv(raw)
    assert got["E"] == sent["E"] * 1000
    assert (got["k"]["t"], got["k"]["T"]) == (sent["k"]["t"] * 1000, sent["k"]["T"] * 1000)


async def test_close_candle_opens_the_next_at_the_previous_close(quiet: DemoExchange) -> None:
    quiet.close_candle("BTCUSDT", "1m")
    async with listen(quiet, "btcusdt@kline_1m") as ws:
        quiet.trade("BTCUSDT")
        forming = quiet.kline("BTCUSDT", "1m")["k"]
        await recv(ws)
        closed = quiet.close_candle("BTCUSDT", "1m")
        assert (await recv(ws))["data"] == closed
        following = quiet.kline("BTCUSDT", "1m")
        assert (await recv(ws))["data"] == following
    done, new = closed["k"], following["k"]
    assert done["x"] is True and done["n"] == 1
    assert as_row(done) == as_row(forming)  # the final update of the candle last sent
    assert new["x"] is False and new["t"] == done["t"] + MINUTE_MS
    assert new["T"] == new["t"] + MINUTE_MS - 1
    assert new["o"] == new["h"] == new["l"] == new["c"] == done["c"]
    assert (new["v"], new["q"], new["V"], new["Q"]) == ("0.00000000",) * 4
    assert (new["n"], new["f"], new["L"]) == (0, -1, -1)
    rows = (await rest(quiet, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=2)).json()
    assert rows == [as_row(done), as_row(new)]

    month = quiet.close_candle("BTCUSDT", "1M")["k"]
    next_month = quiet.kline("BTCUSDT", "1M")["k"]
    assert next_month["t"] == month["T"] + 1
    assert datetime.fromtimestamp(next_month["t"] / 1000, UTC).day == 1


async def test_trade_moves_the_candle_and_continues_agg_trades(quiet: DemoExchange) -> None:
    quiet.close_candle("BTCUSDT", "1m")
    history = (await rest(quiet, "/api/v3/aggTrades", symbol="BTCUSDT", limit=1000)).json()
    assert len(history) == 1000 and set(history[0]) == set("apqflTmM")
    ids = [agg["a"] for agg in history]
    assert ids == list(range(ids[0], ids[0] + 1000))
    for older, newer in itertools.pairwise(history):
        assert newer["f"] == older["l"] + 1 and newer["T"] >= older["T"]
    async with listen(quiet, "btcusdt@trade", "btcusdt@aggTrade") as ws:
        before = quiet.kline("BTCUSDT", "1m")["k"]
        trade = quiet.trade("BTCUSDT", price="93600.00", maker=False)
        assert await recv(ws) == {"stream": "btcusdt@trade", "data": trade}
        agg = (await recv(ws))["data"]
        after = quiet.kline("BTCUSDT", "1m")["k"]
        second = quiet.agg_trade("BTCUSDT", maker=True)
        assert (await recv(ws))["stream"] == "btcusdt@trade"
        assert await recv(ws) == {"stream": "btcusdt@aggTrade", "data": second}
    assert agg["a"] == ids[-1] + 1 and second["a"] == agg["a"] + 1
    assert agg["f"] == agg["l"] == trade["t"] == history[-1]["l"] + 1
    assert (agg["p"], agg["q"], agg["T"]) == (trade["p"], trade["q"], trade["T"])
    assert agg["p"] == "93600.00000000" and agg["m"] is False and second["m"] is True

    # The trade lands in the forming candle, which had none (f and L are -1 until then).
    assert (before["n"], before["f"], after["n"]) == (0, -1, 1)
    assert after["c"] == trade["p"] and after["f"] == after["L"] == trade["t"]
    assert Decimal(after["v"]) == Decimal(trade["q"]) == Decimal(after["V"])  # a taker buy
    assert Decimal(after["h"]) >= Decimal(trade["p"]) >= Decimal(after["l"])

    newest = (await rest(quiet, "/api/v3/aggTrades", symbol="BTCUSDT", limit=2)).json()
    stream_form = [{k: v for k, v in a.items() if k not in "eEs"} for a in (agg, second)]
    assert newest == stream_form
    onwards = await rest(quiet, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=ids[-1])
    assert [a["a"] for a in onwards.json()] == [ids[-1], agg["a"], second["a"]]


# -- partial books --------------------------------------------------------------------------------


async def test_depth_snapshots_per_stream_and_rest(quiet: DemoExchange) -> None:
    quiet.trade("BTCUSDT", price="93512.01")
    last = Decimal("93512.01")
    streams = ("btcusdt@depth5", "btcusdt@depth20@100ms", "ethusdt@depth10")
    async with listen(quiet, *streams) as ws:
        snapshot = quiet.depth("BTCUSDT")
        first = {m["stream"]: m["data"] for m in [await recv(ws), await recv(ws)]}
        again = quiet.depth("BTCUSDT")
        second = {m["stream"]: m["data"] for m in [await recv(ws), await recv(ws)]}
    assert set(first) == set(second) == {"btcusdt@depth5", "btcusdt@depth20@100ms"}
    assert first["btcusdt@depth20@100ms"] == snapshot and second["btcusdt@depth20@100ms"] == again
    assert first["btcusdt@depth5"] == {
        "lastUpdateId": snapshot["lastUpdateId"],
        "bids": snapshot["bids"][:5],
        "asks": snapshot["asks"][:5],
    }
    assert len(snapshot["bids"]) == len(snapshot["asks"]) == 20
    check_book(snapshot, last)
    check_book(again, last)
    # The book moves: a new id and new quantities each time.
    assert again["lastUpdateId"] > snapshot["lastUpdateId"]
    assert [q for _, q in again["bids"]] != [q for _, q in snapshot["bids"]]

    deep = await rest(quiet, "/api/v3/depth", symbol="BTCUSDT", limit=500)
    assert deep.headers["X-MBX-USED-WEIGHT-1M"] == "25"
    book = deep.json()
    assert len(book["bids"]) == len(book["asks"]) == 500
    check_book(book, last)
    assert book["lastUpdateId"] > again["lastUpdateId"]
    default = (await rest(quiet, "/api/v3/depth", symbol="BTCUSDT")).json()
    assert len(default["asks"]) == 100


# -- REST errors, refusals, weight, delay ------------------------------------------------------

MISSING_SYMBOL = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."


@pytest.mark.parametrize(
    ("path", "params", "code", "msg"),
    [
        ("/api/v3/klines", {"symbol": "FOOUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "2m"}, -1120, "Invalid interval."),
        ("/api/v3/klines", {"interval": "1m"}, -1102, MISSING_SYMBOL),
        ("/api/v3/klines", {"symbol": "BTCUSDT"}, -1102, None),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "ten"}, -1100, None),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"}, -1130, None),
        ("/api/v3/aggTrades", {"symbol": "btcusdt"}, -1100, None),
        ("/api/v3/aggTrades", {"symbol": "BTCUSDT", "limit": "0"}, -1130, None),
        ("/api/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": "-1"}, -1100, None),
        ("/api/v3/depth", {"symbol": ""}, -1102, MISSING_SYMBOL),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "5001"}, -1130, None),
    ],
)
async def test_rest_errors_look_like_binance(
    quiet: DemoExchange, path: str, params: dict[str, str], code: int, msg: str | None
) -> None:
    response = await rest(quiet, path, **params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "msg"} and body["code"] == code and body["msg"]
    assert msg is None or body["msg"] == msg


async def test_refused_rest_requests_and_used_weight(quiet: DemoExchange) -> None:
    async with httpx.AsyncClient(base_url=quiet.rest_url, timeout=WAIT) as client:
        quiet.refuse_rest(1, 429, retry_after=7)
        limited = await client.get("/api/v3/klines?symbol=BTCUSDT&interval=1m")
        served = await client.get("/api/v3/depth?symbol=BTCUSDT&limit=500")
        quiet.refuse_rest(1, 418)
        banned = await client.get("/api/v3/ping")
        fine = await client.get("/api/v3/time")
    assert limited.status_code == 429 and limited.json()["code"] == -1003
    assert limited.json()["msg"].startswith("Too many requests;")
    assert limited.headers["Retry-After"] == "7"
    assert banned.status_code == 418 and banned.json()["code"] == -1003
    assert "Retry-After" not in banned.headers
    assert served.status_code == fine.status_code == 200
    # Every request counts toward the minute's weight, refused or not: 2, 25, 1, 1.
    weights = [r.headers["X-MBX-USED-WEIGHT-1M"] for r in (limited, served, banned, fine)]
    assert weights == ["2", "27", "28", "29"]
    assert quiet.rest_log == [
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"}),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "500"}),
        ("/api/v3/ping", {}),
        ("/api/v3/time", {}),
    ]


async def test_rest_delay_holds_every_answer(quiet: DemoExchange) -> None:
    quiet.rest_delay = 300 * MS
    started = time.monotonic()
    response = await rest(quiet, "/api/v3/ping")
    assert response.status_code == 200 and response.json() == {}
    assert time.monotonic() - started >= 290 * MS


# -- cadence ------------------------------------------------------------------------------------


async def test_quiet_exchange_sends_nothing_unasked(quiet: DemoExchange) -> None:
    streams = [
        f"btcusdt@{kind}"
        for kind in (
            "trade",
            "aggTrade",
            "ticker",
            "miniTicker",
            "bookTicker",
            "kline_1m",
            "depth5",
            "depth20@100ms",
        )
    ]
    unasked: list[Any] = []
    async with listen(quiet, *streams) as ws:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1000 * MS):
                while True:
                    unasked.append(json.loads(await ws.recv()))
    # A minute may end during the wait: a candle's close is all the exchange sends by itself.
    assert all(m["data"]["k"]["x"] is True for m in unasked), unasked


async def test_klines_and_books_arrive_at_their_cadence() -> None:
    async with DemoExchange(
        trades_per_second=0, ticker_interval=3600, kline_interval=200 * MS, seed=7
    ) as ex:
        streams = ("btcusdt@kline_1m", "btcusdt@depth5@100ms", "btcusdt@kline_1s")
        async with listen(ex, *streams) as ws:
            seen: Counter[str] = Counter()
            closed: dict[str, Any] | None = None
            async with asyncio.timeout(WAIT):
                # Each 1 s candle closes by itself as the second passes, with no trade at all.
                while (
                    seen["btcusdt@kline_1m"] < 3 or seen["btcusdt@depth5@100ms"] < 3 or not closed
                ):
                    msg = await recv(ws)
                    seen[msg["stream"]] += 1
                    if msg["stream"] == "btcusdt@kline_1s" and msg["data"]["k"]["x"]:
                        closed = msg["data"]["k"]
                while (msg := await recv(ws))["stream"] != "btcusdt@kline_1s":
                    pass
    following = msg["data"]["k"]
    assert following["t"] == closed["t"] + 1000
    assert following["o"] == following["c"] == closed["c"] and following["n"] == 0
