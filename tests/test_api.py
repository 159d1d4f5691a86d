"""JSON twins of the pages and /metrics, end to end through a real uvicorn and simulator."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from app.demo import DemoExchange
from tests.conftest import LiveServer, eventually, open_sse, parse_html, price_streams

pytestmark = pytest.mark.anyio


async def test_quotes_are_the_websocket_price_messages_as_data(
    http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    answer = await http.get("/api/v1/quotes", params={"symbols": "ETHUSDT,BTCUSDT"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    quotes = answer.json()["quotes"]
    assert [q["symbol"] for q in quotes] == ["ETHUSDT", "BTCUSDT"]
    # Nothing traded on the quiet exchange yet: every figure is null, never a guess.
    assert set(quotes[0]) == {
        "symbol",
        "price",
        "event_time",
        "change",
        "change_percent",
        "high",
        "low",
        "volume",
        "quote_volume",
        "stale",
    }
    async with open_sse(http, "/sse?symbols=ETHUSDT"):
        await eventually(lambda: exchange.subscriptions() >= price_streams("ETHUSDT"))
        sent = exchange.ticker("ETHUSDT")

        async def priced() -> dict[str, object]:
            quote: dict[str, object] = (await http.get("/api/v1/quotes?symbols=ETHUSDT")).json()[
                "quotes"
            ][0]
            return quote

        quote = await priced()
        while quote["price"] != sent["c"]:
            quote = await priced()
    assert quote == {
        "symbol": "ETHUSDT",
        "price": sent["c"],
        "event_time": sent["E"],
        "change": sent["p"],
        "change_percent": sent["P"],
        "high": sent["h"],
        "low": sent["l"],
        "volume": sent["v"],
        "quote_volume": sent["q"],
        "stale": False,
    }


async def test_topic_twins_and_bad_input(http: httpx.AsyncClient) -> None:
    chart = (await http.get("/api/v1/topics/chart:BTCUSDT:1h")).json()
    assert chart["type"] == "candles" and chart["interval"] == "1h"
    assert len(chart["candles"]) == 60
    first = chart["candles"][0]
    assert set(first) == {"open_time", "open", "high", "low", "close", "volume", "closed"}
    assert isinstance(first["open"], str) and first["closed"] is True
    trades = (await http.get("/api/v1/topics/trades:BTCUSDT")).json()
    assert [t["id"] for t in trades["trades"]] == sorted(
        (t["id"] for t in trades["trades"]), reverse=True
    )
    for path, sentence in (
        ("/api/v1/quotes", "no topics given: ask for some, like ?topics=price:BTCUSDT,"),
        ("/api/v1/quotes?symbols=BTCUSDT,NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        ("/api/v1/topics/book:", "malformed topic 'book:': name a symbol, like book:BTCUSDT"),
        ("/api/v1/topics/depth:BTCUSDT", "unknown topic kind 'depth' in 'depth:BTCUSDT'"),
    ):
        answer = await http.get(path)
        assert answer.status_code == 400, path
        assert answer.text.startswith(sentence), answer.text


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_move_with_real_traffic(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    before = scrape((await http.get("/metrics")).text)
    assert before[("pricestream_viewers", (("transport", "sse"),))] == 0
    assert before[("pricestream_upstream_connected", ())] == 0
    async with (
        open_sse(http, "/sse?symbols=BTCUSDT") as events,
        connect(live.url.replace("http", "ws") + "/ws/price/BTCUSDT") as ws,
    ):
        await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"))
        for price in ("93000.01", "93000.02", "93000.03"):
            exchange.trade("BTCUSDT", price=price)
        await events.until(lambda e: 'data-price="93000.03000000"' in e.data)
        while '"93000.03000000"' not in await ws.recv():
            pass
        assert (await http.get("/sse?symbols=NOPE")).status_code == 400
        during = scrape((await http.get("/metrics")).text)
    assert during[("pricestream_viewers", (("transport", "sse"),))] == 1
    assert during[("pricestream_viewers", (("transport", "ws"),))] == 1
    assert during[("pricestream_upstream_connected", ())] == 1
    assert during[("pricestream_upstream_live", ())] == 1
    for name in ("pricestream_upstream_messages_total", "pricestream_renders_total"):
        assert during[(name, ())] >= before[(name, ())] + 3, name
    for transport, least in (("sse", 1000), ("ws", 300)):  # fragments are bigger than JSON
        label = (("transport", transport),)
        assert during[("pricestream_events_sent_total", label)] >= 4  # status, snapshot, trades
        assert during[("pricestream_bytes_sent_total", label)] > least
    assert during[("pricestream_refusals_total", (("reason", "bad_input"),))] == 1
    # Observed once per update handed over (three trades in a burst: one or two renders).
    count = ("pricestream_update_latency_seconds_count", ())
    assert during[count] >= before[count] + 1
    # They went out within a second of their event time (`E` is their send time here).
    assert during[("pricestream_update_latency_seconds_bucket", (("le", "1.0"),))] == during[count]
    rounds = ("pricestream_flush_round_seconds_count", ())
    assert during[rounds] >= before[rounds] + 1
    assert during[("pricestream_flush_round_seconds_bucket", (("le", "1.0"),))] == during[rounds]
    assert (
        during[
            ("pricestream_rest_calls_total", (("outcome", "200"), ("path", "/api/v3/exchangeInfo")))
        ]
        == 1
    )
    assert ("process_resident_memory_bytes", ()) in during


async def test_debug_panel_counts_viewers_per_topic_and_shows_what_came_in(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async with (
        open_sse(http, "/sse?symbols=BTCUSDT") as events,
        connect(live.url.replace("http", "ws") + "/ws/price/BTCUSDT") as ws,
    ):
        await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"))
        trade = exchange.trade("BTCUSDT", price="91234.56")
        await events.until(lambda e: 'data-price="91234.56000000"' in e.data)
        panel = (await http.get("/debug")).text
        local_port = str(ws.local_address[1])
    [row] = [e for e in parse_html(panel) if e.attrs.get("data-topic") == "price:BTCUSDT"]
    cells = [e.text for e in parse_html(panel) if e.tag == "td"][:6]
    assert cells[:3] == ["price:BTCUSDT", "1", "1"]
    assert f'"t":{trade["t"]}' in cells[4]  # the raw message, as Binance would send it
    assert 'data-price="91234.56000000"' in cells[5]  # beside the fragment it became
    assert row.tag == "tr" and local_port not in panel  # counts, never who
