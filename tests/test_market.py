"""Raw Binance frames into typed values, and quotes built from them."""

from __future__ import annotations

import json

import pytest

from app.market import (
    AggTrade,
    BookTicker,
    Frame,
    ParseError,
    Quote,
    Reply,
    ServerShutdown,
    Ticker,
    Trade,
    parse,
)

TRADE = {
    "e": "trade",
    "E": 1735689600123,
    "s": "BTCUSDT",
    "t": 4412345678,
    "p": "93512.01000000",
    "q": "0.00150000",
    "T": 1735689600122,
    "m": False,
    "M": True,
}
TICKER = {
    "e": "24hrTicker",
    "E": 1735689600500,
    "s": "BTCUSDT",
    "p": "-412.50000000",
    "P": "-0.439",
    "w": "93788.12345678",
    "x": "93924.51000000",
    "c": "93512.01000000",
    "Q": "0.00150000",
    "b": "93512.00000000",
    "B": "1.20400000",
    "a": "93512.01000000",
    "A": "0.31000000",
    "o": "93924.51000000",
    "h": "94811.00000000",
    "l": "92870.10000000",
    "v": "18234.55120000",
    "q": "1710222333.12345678",
    "O": 1735603200500,
    "C": 1735689600500,
    "F": 4400000000,
    "L": 4412345678,
    "n": 12345679,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            TRADE,
            Frame(
                None,
                Trade(
                    "BTCUSDT",
                    1735689600123,
                    4412345678,
                    "93512.01000000",
                    "0.00150000",
                    1735689600122,
                    False,
                ),
            ),
        ),
        (
            {"stream": "btcusdt@trade", "data": TRADE},
            Frame(
                "btcusdt@trade",
                Trade(
                    "BTCUSDT",
                    1735689600123,
                    4412345678,
                    "93512.01000000",
                    "0.00150000",
                    1735689600122,
                    False,
                ),
            ),
        ),
        (
            {
                "e": "aggTrade",
                "E": 5,
                "s": "BTCUSDT",
                "a": 3,
                "p": "1.5",
                "q": "2",
                "f": 10,
                "l": 12,
                "T": 4,
                "m": True,
                "M": True,
            },
            Frame(None, AggTrade("BTCUSDT", 5, 3, "1.5", "2", 10, 12, 4, True)),
        ),
        (
            TICKER,
            Frame(
                None,
                Ticker(
                    "BTCUSDT",
                    1735689600500,
                    "93512.01000000",
                    "93924.51000000",
                    "94811.00000000",
                    "92870.10000000",
                    "18234.55120000",
                    "1710222333.12345678",
                    4412345678,
                ),
            ),
        ),
        (
            {
                "e": "24hrMiniTicker",
                "E": 9,
                "s": "ETHBTC",
                "c": "0.036",
                "o": "0.035",
                "h": "0.04",
                "l": "0.03",
                "v": "10",
                "q": "0.36",
            },
            Frame(None, Ticker("ETHBTC", 9, "0.036", "0.035", "0.04", "0.03", "10", "0.36", None)),
        ),
        (
            {
                "u": 400900217,
                "s": "BNBUSDT",
                "b": "25.35190000",
                "B": "31.21000000",
                "a": "25.36520000",
                "A": "40.66000000",
            },
            Frame(
                None,
                BookTicker(
                    "BNBUSDT", 400900217, "25.35190000", "31.21000000", "25.36520000", "40.66000000"
                ),
            ),
        ),
        (
            {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1770123456789}},
            Frame("!serverShutdown", ServerShutdown(1770123456789)),
        ),
        ({"result": None, "id": 1}, Reply(1, None)),
        ({"result": ["btcusdt@trade"], "id": 3}, Reply(3, ["btcusdt@trade"])),
        (
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2},
            Reply(2, None, 2, "Invalid request: invalid stream"),
        ),
    ],
)
def test_parse_known_frames(raw: object, expected: object) -> None:
    assert parse(json.dumps(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "not json at all",
        '{"e": "trade"',
        "[1, 2, 3]",
        "null",
        json.dumps({"e": "depthUpdate", "E": 1, "s": "X"}),  # a type we do not read
        json.dumps({**TRADE, "p": 93512.01}),  # a float price: never trusted
        json.dumps({**TRADE, "p": "1e5"}),
        json.dumps({**TRADE, "p": "<script>"}),
        json.dumps({**TRADE, "t": "12"}),
        json.dumps({k: v for k, v in TRADE.items() if k != "E"}),
        json.dumps({"stream": "btcusdt@trade", "data": "oops"}),
        json.dumps({"stream": 5, "data": TRADE}),
        json.dumps({"hello": "world"}),
    ],
)
def test_parse_rejects_what_it_cannot_trust(raw: str) -> None:
    with pytest.raises(ParseError):
        parse(raw)


def _trade(trade_id: int, price: str, event_time: int = 1000) -> Trade:
    return Trade("BTCUSDT", event_time, trade_id, price, "1", event_time, False)


def _ticker(event_time: int, last: str, last_trade_id: int | None = 10) -> Ticker:
    return Ticker(
        "BTCUSDT", event_time, last, "100.00", "120.00", "90.00", "5", "500.5", last_trade_id
    )


def test_quote_moves_with_trades_and_remembers_direction() -> None:
    q = Quote("BTCUSDT").with_trade(_trade(1, "100.00"))
    assert q is not None and q.price == "100.00" and q.direction == "" and not q.changed
    q = q.with_trade(_trade(2, "101.50", 1001))
    assert q is not None and (q.direction, q.changed, q.event_time) == ("up", True, 1001)
    q = q.with_trade(_trade(3, "101.50", 1002))
    assert q is not None and (q.direction, q.changed) == ("up", False)
    q = q.with_trade(_trade(4, "99", 1003))
    assert q is not None and (q.direction, q.changed, q.price) == ("down", True, "99")


def test_quote_ignores_duplicates_and_out_of_order_trades() -> None:
    q = Quote("BTCUSDT").with_trade(_trade(5, "100.00"))
    assert q is not None
    assert q.with_trade(_trade(5, "100.00")) is None
    assert q.with_trade(_trade(4, "1.00", 2000)) is None


def test_ticker_fills_24h_figures_and_price_only_when_newer() -> None:
    q = Quote("BTCUSDT").with_ticker(_ticker(1000, "105.00", last_trade_id=10))
    assert q is not None
    assert (q.price, q.open, q.high, q.low, q.quote_volume) == (
        "105.00",
        "100.00",
        "120.00",
        "90.00",
        "500.5",
    )
    assert q.change() == ("5.00", "5.00")
    q = q.with_trade(_trade(11, "106.00", 1100))
    assert q is not None
    # A ticker built before trade 11 must not put the older price back.
    later = q.with_ticker(_ticker(1200, "105.00", last_trade_id=10))
    assert later is not None and later.price == "106.00" and later.event_time == 1200
    # A ticker that knows of trades we missed brings the price forward.
    caught_up = later.with_ticker(_ticker(1300, "107.00", last_trade_id=14))
    assert caught_up is not None and caught_up.price == "107.00" and caught_up.trade_id == 14
    assert caught_up.with_ticker(_ticker(1300, "1.00", last_trade_id=99)) is None


def test_trade_extends_the_24h_range() -> None:
    q = Quote("BTCUSDT").with_ticker(_ticker(1000, "105.00"))
    assert q is not None
    q = q.with_trade(_trade(11, "121.00"))
    assert q is not None and q.high == "121.00" and q.low == "90.00"


def test_change_is_exact_decimal_arithmetic() -> None:
    q = Quote("X", price="0.30000000", open="0.10000000")
    assert q.change() == ("0.20000000", "200.00")
    assert Quote("X", price="1").change() is None
