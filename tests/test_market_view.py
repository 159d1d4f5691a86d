"""The market view end to end: chart, book and trades from the simulator, over real sockets.

History comes from the simulator's REST klines and aggTrades, live data from its streams; each
test compares what a viewer receives with what the exchange sent, to the decimal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from app.demo import DemoExchange
from app.hub import Hub
from app.topics.key import Topic
from tests.conftest import (
    WAIT,
    EventReader,
    LiveServer,
    eventually,
    open_sse,
    parse_html,
    root,
    run_server,
    settings_for,
)

pytestmark = pytest.mark.anyio
CHART = "chart:BTCUSDT:1m"


def candles(html: str) -> list[dict[str, str | None]]:
    return [e.attrs for e in parse_html(html) if "data-open-time" in e.attrs]


def ohlcv(candle: dict[str, Any]) -> tuple[str, ...]:
    """A candle as the page shows it, or as Binance sends it (kline `k` or REST row)."""
    if "data-open-time" in candle:
        keys = ("data-open-time", "data-open", "data-high", "data-low", "data-close")
        return (*(str(candle[k]) for k in keys), str(candle["data-volume"]))
    return tuple(str(candle[k]) for k in ("t", "o", "h", "l", "c", "v"))


def rest_row(row: list[Any]) -> tuple[str, ...]:
    return (str(row[0]), *(str(v) for v in row[1:6]))


async def first_with(reader: EventReader, event: str, check: Any = lambda html: True) -> str:
    found: ServerSentEvent = await reader.until(lambda e: e.event == event and check(e.data))
    return found.data


async def test_history_then_live_candles_exact_to_the_decimal(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async with open_sse(http, f"/sse?topics={CHART}") as reader:
        html = await first_with(reader, "chart-BTCUSDT-1m", lambda h: bool(candles(h)))
        assert root(html).attrs["data-interval"] == "1m"
        # The history is exactly the exchange's klines for the window.
        async with httpx.AsyncClient(base_url=exchange.rest_url, timeout=WAIT) as rest:
            answer = await rest.get(
                "/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m", "limit": "60"}
            )
        rows = [rest_row(r) for r in answer.json()]
        assert [ohlcv(c) for c in candles(html)] == rows
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@kline_1m"})
        # Live: a trade moves the forming candle, the stream update is shown as sent.
        exchange.trade("BTCUSDT", price="93999.99")
        sent = exchange.kline("BTCUSDT", "1m")["k"]
        html = await first_with(
            reader, "chart-BTCUSDT-1m", lambda h: candles(h)[-1]["data-close"] == sent["c"]
        )
        shown = candles(html)
        assert ohlcv(shown[-1]) == ohlcv(sent) and shown[-1]["data-forming"] == "true"
        assert [ohlcv(c) for c in shown[:-1]] == rows[:-1]
        # The candle closes; the next one starts; the closed one is final as Binance closed it.
        closed = exchange.close_candle("BTCUSDT", "1m")["k"]
        message = exchange.kline("BTCUSDT", "1m")
        following = message["k"]
        html = await first_with(
            reader,
            "chart-BTCUSDT-1m",
            lambda h: candles(h)[-1]["data-open-time"] == str(following["t"]),
        )
        shown = candles(html)
        assert ohlcv(shown[-2]) == ohlcv(closed) and "data-forming" not in shown[-2]
        assert ohlcv(shown[-1]) == ohlcv(following)
        assert len(shown) == 60 and root(html).attrs["data-event-time"] == str(message["E"])


async def test_a_candles_close_survives_a_viewer_that_reads_slowly(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    hub: Hub = live.app.state.hub
    topic = Topic("chart", "BTCUSDT", "1m")
    slow = hub.subscribe([topic])  # a viewer that reads nothing while the candle closes
    try:
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@kline_1m"})
        await eventually(lambda: hub.entries[topic].panel.has_data)
        for _ in range(5):
            exchange.trade("BTCUSDT")
            exchange.kline("BTCUSDT", "1m")
        closed = exchange.close_candle("BTCUSDT", "1m")["k"]
        for _ in range(5):
            exchange.trade("BTCUSDT")
            message = exchange.kline("BTCUSDT", "1m")
        following = message["k"]
        await eventually(lambda: hub.entries[topic].panel.event_time == message["E"])
        await eventually(lambda: hub.entries[topic].timer is None)
        # All those renders were conflated into one slot; it holds the exact close.
        data = slow.pending["chart-BTCUSDT-1m"].decode()
        html = data.split("data: ", 1)[1].split("\r\n", 1)[0]
        shown = {c["data-open-time"]: c for c in candles(html)}
        assert ohlcv(shown[str(closed["t"])]) == ohlcv(closed)
        assert ohlcv(shown[str(following["t"])]) == ohlcv(following)
    finally:
        hub.unsubscribe(slow)


async def test_book_levels_match_what_the_exchange_sent(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async with open_sse(http, "/sse?topics=book:BTCUSDT") as reader:
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@depth20@100ms"})
        book = exchange.depth("BTCUSDT")
        html = await first_with(reader, "book-BTCUSDT", lambda h: "loading" not in root(h).classes)
        levels = [
            (e.attrs["data-side"], e.attrs["data-price"], e.attrs["data-qty"])
            for e in parse_html(html)
            if "data-side" in e.attrs
        ]
        assert levels == [("ask", p, q) for p, q in book["asks"]] + [
            ("bid", p, q) for p, q in book["bids"]
        ]
        assert len(levels) == 40
        newer = exchange.depth("BTCUSDT")
        html = await first_with(
            reader,
            "book-BTCUSDT",
            lambda h: (
                next(e.attrs["data-qty"] for e in parse_html(h) if "data-side" in e.attrs)
                == newer["asks"][0][1]
            ),
        )
        assert root(html).attrs["data-topic"] == "book:BTCUSDT"


async def test_trades_seeded_then_live_newest_first_without_duplicates(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async with open_sse(http, "/sse?topics=trades:BTCUSDT") as reader:
        html = await first_with(
            reader, "trades-BTCUSDT", lambda h: "loading" not in root(h).classes
        )
        seeded = [
            int(e.attrs["data-trade-id"] or 0)
            for e in parse_html(html)
            if "data-trade-id" in e.attrs
        ]
        assert len(seeded) == 30, "the tape is filled from REST before any live trade"
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@aggTrade"})
        sent = [exchange.agg_trade("BTCUSDT", maker=i % 2 == 0) for i in range(12)]
        # The same trades again (two connections overlapping): never shown twice.
        for payload in sent[-3:]:
            exchange.publish("btcusdt@aggTrade", payload)
        exchange.agg_trade("BTCUSDT")
        last = exchange.agg_trade("BTCUSDT")
        html = await first_with(
            reader, "trades-BTCUSDT", lambda h: f'data-trade-id="{last["a"]}"' in h
        )
        rows = [e.attrs for e in parse_html(html) if "data-trade-id" in e.attrs]
        ids = [int(r["data-trade-id"] or 0) for r in rows]
        assert ids == sorted(set(ids), reverse=True) and len(ids) == 30
        assert ids[0] == last["a"] and ids[-1] > seeded[-1]
        by_id = {p["a"]: p for p in sent}
        for row in rows:
            shown = by_id.get(int(row["data-trade-id"] or 0))
            if shown is not None:
                assert (row["data-price"], row["data-qty"], row["data-time"]) == (
                    shown["p"],
                    shown["q"],
                    str(shown["T"]),
                )
                assert row["data-side"] == ("sell" if shown["m"] else "buy")


async def test_one_rest_call_serves_a_hundred_openers(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    def klines_calls() -> int:
        return sum(
            1
            for path, q in exchange.rest_log
            if path == "/api/v3/klines" and q.get("symbol") == "ETHUSDT" and q["interval"] == "5m"
        )

    answers = await asyncio.gather(*(http.get("/fragment/chart:ETHUSDT:5m") for _ in range(100)))
    assert {a.status_code for a in answers} == {200}
    assert all(candles(a.text) for a in answers)
    assert klines_calls() == 1
    health = (await http.get("/healthz")).json()
    assert health["rest"]["cache_hits"] >= 0 and health["rest"]["calls"]["/api/v3/klines"] >= 1


async def test_rest_rate_limit_backs_off_and_says_so(
    exchange: DemoExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with (
        run_server(settings_for(exchange)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        exchange.refuse_rest(1, 429, retry_after=60)
        before = len(exchange.rest_log)
        page = await http.get("/fragment/chart:SOLUSDT:15m")
        assert page.status_code == 200
        [note] = [e for e in parse_html(page.text) if "ps-note" in e.classes]
        assert note.text.startswith("history unavailable: HTTP 429: Binance rate-limited us")
        health = (await http.get("/healthz")).json()
        assert 50 < health["rest"]["cooling_down_s"] <= 60
        assert "HTTP 429" in health["rest"]["last_error"]
        # While cooling down, nothing more goes to Binance, however many ask.
        for topic in ("chart:SOLUSDT:1h", "trades:SOLUSDT", "chart:ETHUSDT:4h"):
            assert (await http.get(f"/fragment/{topic}")).status_code == 200
        await asyncio.sleep(0.5)
        assert len(exchange.rest_log) == before + 1
        assert any("no REST calls for 60 s" in r.getMessage() for r in caplog.records)


async def test_a_slow_symbol_list_at_start_up_is_logged_and_retried_soon(
    exchange: DemoExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    exchange.rest_delay = 6.0  # slower than start-up waits (5 s), but it does answer
    settings = settings_for(exchange, symbols_retry=0.5)
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        health = (await http.get("/healthz")).json()
        assert health["symbols"]["source"] == "format-only"
        assert "no answer within 5 s" in health["symbols"]["last_error"]
        assert any(
            "symbol list unavailable" in r.getMessage()
            and "trying again in 0.5 s" in r.getMessage()
            for r in caplog.records
        )
        exchange.rest_delay = 0.0

        async def listed() -> bool:
            return bool((await http.get("/healthz")).json()["symbols"]["source"] == "exchangeInfo")

        async with asyncio.timeout(WAIT):
            while not await listed():
                await asyncio.sleep(0.1)


async def test_market_page_wires_every_panel_on_one_connection(http: httpx.AsyncClient) -> None:
    page = await http.get("/market/btcusdt")
    assert page.status_code == 200
    elements = parse_html(page.text)
    [board] = [e for e in elements if "sse-connect" in e.attrs]
    assert board.attrs["sse-connect"] == (
        "/sse?topics=price:BTCUSDT,chart:BTCUSDT:1m,book:BTCUSDT,trades:BTCUSDT"
    )
    swaps = [e.attrs["sse-swap"] for e in elements if "sse-swap" in e.attrs]
    assert swaps == [
        "status",
        "alert",  # loopback and no token: the owner's page
        "price-BTCUSDT",
        "chart-BTCUSDT-1m",
        "book-BTCUSDT",
        "trades-BTCUSDT",
    ]
    topics = [e.attrs["data-topic"] for e in elements if "data-topic" in e.attrs]
    assert topics == ["price:BTCUSDT", "chart:BTCUSDT:1m", "book:BTCUSDT", "trades:BTCUSDT"]
    switch = [
        (e.text, e.attrs["href"])
        for e in elements
        if e.tag == "a" and (e.attrs.get("href") or "").startswith("/market/")
    ]
    assert switch == [
        ("1m", "/market/BTCUSDT"),
        ("5m", "/market/BTCUSDT?interval=5m"),
        ("15m", "/market/BTCUSDT?interval=15m"),
        ("1h", "/market/BTCUSDT?interval=1h"),
        ("4h", "/market/BTCUSDT?interval=4h"),
        ("1d", "/market/BTCUSDT?interval=1d"),
        ("1w", "/market/BTCUSDT?interval=1w"),
    ]
    [current] = [e for e in elements if e.attrs.get("aria-current") == "page"]
    assert current.text == "1m"
    hourly = parse_html((await http.get("/market/BTCUSDT?interval=1h")).text)
    [board] = [e for e in hourly if "sse-connect" in e.attrs]
    assert "chart:BTCUSDT:1h" in (board.attrs["sse-connect"] or "")
    [current] = [e for e in hourly if e.attrs.get("aria-current") == "page"]
    assert current.text == "1h"


async def test_board_cards_open_the_market_view_and_carry_a_sparkline(
    http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    page = parse_html((await http.get("/?symbols=BTCUSDT,ETHUSDT")).text)
    links = [e.attrs["href"] for e in page if "open-market" in e.classes]
    assert links == ["/market/BTCUSDT", "/market/ETHUSDT"]
    # Once the minute history is in, the card draws the last hour as an SVG polyline.
    async with open_sse(http, "/sse?symbols=BTCUSDT") as reader:
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@ticker"})
        exchange.ticker("BTCUSDT")
        html = await first_with(
            reader, "price-BTCUSDT", lambda h: any(e.tag == "polyline" for e in parse_html(h))
        )
    [line] = [e for e in parse_html(html) if e.tag == "polyline"]
    assert len((line.attrs["points"] or "").split()) == 60


@pytest.mark.parametrize(
    ("query", "stream", "swap"),
    [
        ("view=book", "/sse?topics=book:BTCUSDT", "book-BTCUSDT"),
        # The builder's form sends its interval with every view; only the chart uses it.
        ("view=book&interval=1h", "/sse?topics=book:BTCUSDT", "book-BTCUSDT"),
        ("view=trades&theme=dark", "/sse?topics=trades:BTCUSDT", "trades-BTCUSDT"),
        ("view=chart&interval=4h", "/sse?topics=chart:BTCUSDT:4h", "chart-BTCUSDT-4h"),
        ("view=chart", "/sse?topics=chart:BTCUSDT:1m", "chart-BTCUSDT-1m"),
    ],
)
async def test_embed_views_show_one_market_panel(
    http: httpx.AsyncClient, query: str, stream: str, swap: str
) -> None:
    page = await http.get(f"/embed/BTCUSDT?{query}")
    assert page.status_code == 200
    elements = parse_html(page.text)
    [board] = [e for e in elements if "sse-connect" in e.attrs]
    assert board.attrs["sse-connect"] == stream
    assert [e.attrs["sse-swap"] for e in elements if "sse-swap" in e.attrs] == [swap, "status"]


async def test_bad_embed_views_are_named(http: httpx.AsyncClient) -> None:
    for query, sentence in (
        ("view=candles", "view 'candles' is not one of full, compact, chart, book, trades"),
        ("view=chart&interval=2m", "unknown interval '2m': use one of 1m, 3m, 5m, 15m, 30m"),
    ):
        page = await http.get(f"/embed/BTCUSDT?{query}")
        assert page.status_code == 400
        paragraphs = [e.text for e in parse_html(page.text) if e.tag == "p"]
        assert paragraphs[0].startswith(sentence), paragraphs


async def test_a_close_missed_while_disconnected_is_filled_in_from_rest(
    exchange: DemoExchange,
) -> None:
    settings = settings_for(exchange, backoff_initial=0.3, backoff_max=0.6)
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
        open_sse(http, f"/sse?topics={CHART}") as reader,
    ):
        await first_with(reader, "chart-BTCUSDT-1m", lambda h: bool(candles(h)))
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@kline_1m"})
        forming = exchange.kline("BTCUSDT", "1m")["k"]
        await first_with(
            reader, "chart-BTCUSDT-1m", lambda h: candles(h)[-1]["data-close"] == forming["c"]
        )
        # The connection drops; the candle trades on and closes while nobody listens.
        exchange.refuse_next(2, 503)
        exchange.reset_connections()
        await eventually(lambda: not exchange.peers)
        exchange.trade("BTCUSDT", price="91234.56")
        closed = exchange.close_candle("BTCUSDT", "1m")["k"]
        # Back: the first data makes the link live again, and the history is fetched anew.
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@kline_1m"})
        exchange.ticker("BTCUSDT")
        html = await first_with(
            reader,
            "chart-BTCUSDT-1m",
            lambda h: any(
                c["data-open-time"] == str(closed["t"]) and "data-forming" not in c
                for c in candles(h)
            ),
        )
        shown = {c["data-open-time"]: c for c in candles(html)}
        assert ohlcv(shown[str(closed["t"])]) == ohlcv(closed)
        assert closed["c"] == "91234.56000000"
