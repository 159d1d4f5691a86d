"""Filters and fragments render the expected HTML."""

from __future__ import annotations

import pytest

from app.market import AggTrade, Candle, Depth, Kline
from app.render import (
    Renderer,
    format_clock,
    format_price,
    format_signed,
    format_volume,
    sse_event,
)
from app.symbols import SymbolInfo
from app.topics import make_panel
from app.topics.key import Topic
from app.topics.price import Quote
from tests.conftest import parse_html, root


@pytest.mark.parametrize(
    ("value", "decimals", "shown"),
    [
        ("93512.01000000", None, "93,512.01"),
        ("93512.00000000", None, "93,512.00"),
        ("0.00002417", None, "0.00002417"),
        ("25.35190000", None, "25.3519"),
        ("1234567.10000000", 2, "1,234,567.10"),
        ("0.38215000", 5, "0.38215"),
        ("100.00000000", 0, "100"),
        ("-412.50000000", 2, "\u2212412.50"),
        ("000.5", None, "0.50"),
        # Digits a float would get wrong stay exactly as sent.
        ("0.10000000000000001", None, "0.10000000000000001"),
        ("9007199254740993.5", None, "9,007,199,254,740,993.50"),
        (None, None, "—"),
    ],
)
def test_format_price(value: str | None, decimals: int | None, shown: str) -> None:
    assert format_price(value, decimals) == shown


def test_format_signed_volume_clock() -> None:
    assert format_signed("412.5", 2) == "+412.50"
    assert format_signed("-0.44") == "\u22120.44"
    assert format_signed("0.00") == "0.00"
    assert format_volume("1710222333.12345678") == "1.71B"
    assert format_volume("999.999") == "1000.00"
    assert format_volume("12345") == "12.35K"
    assert format_clock(1735689600123) == "00:00:00 UTC"


QUOTE = Quote(
    "BTCUSDT",
    price="93512.01000000",
    event_time=1735689600123,
    trade_id=4,
    direction="up",
    open="93924.51000000",
    high="94811.00000000",
    low="92870.10000000",
    volume="1",
    quote_volume="1710222333.12345678",
)


def render(quote: Quote, **context: object) -> str:
    values = {
        "topic": Topic("price", quote.symbol),
        "stale": False,
        "demo": False,
        "decimals": 2,
        "quote_asset": "USDT",
        "base_asset": "BTC",
        "event_time": quote.event_time,
        "has_data": quote.has_price,
        "error": None,
        "changed": True,
        "spark": "",
        "spark_trend": "",
    }
    values.update(context)
    return Renderer().fragment("quote", quote=quote, **values)


def render_panel(topic: Topic, *events: object, stale: bool = False, demo: bool = False) -> str:
    """A panel fed `events`, rendered as the hub renders it."""
    info = SymbolInfo(topic.symbol, "TRADING", "BTC", "USDT", 2)
    panel = make_panel(topic, info)
    for event in events:
        panel.apply(event)  # type: ignore[arg-type]
    return Renderer().fragment(
        panel.template,
        topic=topic,
        stale=stale,
        demo=demo,
        event_time=panel.event_time,
        has_data=panel.has_data,
        error=None,
        decimals=2,
        quote_asset="USDT",
        base_asset="BTC",
        **panel.context(),
    )


def test_fragment_carries_the_contract_attributes_on_one_line() -> None:
    html = render(QUOTE)
    assert "\n" not in html
    article = root(html)
    assert article.tag == "article"
    assert article.attrs["data-symbol"] == "BTCUSDT"
    assert article.attrs["data-price"] == "93512.01000000"
    assert article.attrs["data-event-time"] == "1735689600123"
    assert article.attrs["data-topic"] == "price:BTCUSDT"
    assert article.classes == {"ps-quote", "ps-panel", "up", "flash-up"}
    price = next(e for e in parse_html(html) if "ps-value" in e.classes)
    assert price.text == "93,512.01"
    change = next(e for e in parse_html(html) if "ps-change" in e.classes)
    assert change.classes == {"ps-stat", "ps-change", "ps-neg"}
    assert change.text == "24h\u2212412.50 (\u22120.44%)"


def test_stale_fragment_greys_out_and_says_as_of_when() -> None:
    html = render(QUOTE, stale=True)
    assert "stale" in root(html).classes
    badge = next(e for e in parse_html(html) if "ps-asof" in e.classes)
    assert badge.text == "as of 00:00:00 UTC"


def test_loading_and_no_data_states() -> None:
    loading = render(Quote("ETHUSDT"))
    assert root(loading).classes == {"ps-quote", "ps-panel", "loading"}
    assert "data-price" not in root(loading).attrs
    assert [e.text for e in parse_html(loading) if "ps-loading" in e.classes] == ["Loading…"]
    failed = render(Quote("ETHUSDT"), stale=True)
    assert [e.text for e in parse_html(failed) if "ps-error" in e.classes] == ["No data yet"]


def test_demo_badge_only_in_demo() -> None:
    assert [e.text for e in parse_html(render(QUOTE, demo=True)) if "ps-demo" in e.classes] == [
        "DEMO"
    ]
    assert not [e for e in parse_html(render(QUOTE)) if "ps-demo" in e.classes]


def test_fragment_escapes_what_it_shows() -> None:
    html = render(Quote("<B&>"), quote_asset="<U>")
    assert "<B&>" not in html and "<U>" not in html
    assert root(html).attrs["data-symbol"] == "<B&>"


def test_book_fragment_lists_levels_best_first_exactly_as_sent() -> None:
    depth = Depth(
        7,
        [("93512.00000000", "1.50000000"), ("93511.99000000", "0.00100000")],
        [("93512.01000000", "0.25000000"), ("93512.02000000", "3.00000000")],
    )
    html = render_panel(Topic("book", "BTCUSDT"), depth, demo=True)
    assert "\n" not in html
    section = root(html)
    assert (section.attrs["data-topic"], section.attrs["data-symbol"]) == (
        "book:BTCUSDT",
        "BTCUSDT",
    )
    assert section.attrs["data-event-time"]
    levels = [
        (e.attrs["data-side"], e.attrs["data-price"], e.attrs["data-qty"])
        for e in parse_html(html)
        if "data-side" in e.attrs
    ]
    assert levels == [
        ("ask", "93512.01000000", "0.25000000"),
        ("ask", "93512.02000000", "3.00000000"),
        ("bid", "93512.00000000", "1.50000000"),
        ("bid", "93511.99000000", "0.00100000"),
    ]
    [spread] = [e for e in parse_html(html) if "ps-spread" in e.classes]
    assert spread.text == "93,512.00 spread 0.01 (0.000%)"
    assert [e.text for e in parse_html(html) if "ps-demo" in e.classes] == ["DEMO"]
    empty = render_panel(Topic("book", "BTCUSDT"))
    assert root(empty).classes == {"ps-book", "ps-panel", "loading"}


def test_trades_fragment_newest_first_with_the_taker_side() -> None:
    trades = [
        AggTrade(
            i, f"1.0{i}", "2.50000000", 1735689600000 + i, i % 2 == 0, 1735689600100 + i, "BTCUSDT"
        )
        for i in (1, 2, 3)
    ]
    html = render_panel(Topic("trades", "BTCUSDT"), *trades, stale=True)
    section = root(html)
    assert section.attrs["data-event-time"] == "1735689600103"
    assert "stale" in section.classes
    rows = [
        (
            e.attrs["data-trade-id"],
            e.attrs["data-price"],
            e.attrs["data-qty"],
            e.attrs["data-time"],
            e.attrs["data-side"],
        )
        for e in parse_html(html)
        if "data-trade-id" in e.attrs
    ]
    assert rows == [
        ("3", "1.03", "2.50000000", "1735689600003", "buy"),
        ("2", "1.02", "2.50000000", "1735689600002", "sell"),
        ("1", "1.01", "2.50000000", "1735689600001", "buy"),
    ]
    assert [e.text for e in parse_html(html) if "ps-asof" in e.classes] == ["as of 00:00:00 UTC"]


def test_chart_fragment_carries_every_candle_oldest_first() -> None:
    def kline(minute: int, close: str, closed: bool) -> Kline:
        t = 1735689600000 + minute * 60_000
        candle = Candle(t, t + 59_999, "1m", "100.00", "101.00", "99.00", close, "3.5", 2, closed)
        return Kline(t + 500, "BTCUSDT", candle)

    html = render_panel(
        Topic("chart", "BTCUSDT", "1m"), kline(0, "100.50", True), kline(1, "99.50", False)
    )
    section = root(html)
    assert (section.attrs["data-topic"], section.attrs["data-interval"]) == (
        "chart:BTCUSDT:1m",
        "1m",
    )
    assert section.attrs["data-event-time"] == str(1735689600000 + 60_500)
    candles = [e.attrs for e in parse_html(html) if "data-open-time" in e.attrs]
    assert [
        (
            c["data-open-time"],
            c["data-open"],
            c["data-high"],
            c["data-low"],
            c["data-close"],
            c["data-volume"],
        )
        for c in candles
    ] == [
        ("1735689600000", "100.00", "101.00", "99.00", "100.50", "3.5"),
        ("1735689660000", "100.00", "101.00", "99.00", "99.50", "3.5"),
    ]
    assert "data-forming" in candles[1] and "data-forming" not in candles[0]
    [last] = [e for e in parse_html(html) if "ps-last" in e.classes]
    assert last.text == "99.50"


def test_sse_event_encoding() -> None:
    assert (
        sse_event("price-BTCUSDT", "<p>x</p>") == b"event: price-BTCUSDT\r\ndata: <p>x</p>\r\n\r\n"
    )
    with pytest.raises(AssertionError):
        sse_event("x", "two\nlines")
