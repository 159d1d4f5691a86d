"""Raw Binance messages and REST answers into typed values, and what is refused."""

from __future__ import annotations

import json

import pytest

from app.market import (
    AggTrade,
    Candle,
    Depth,
    Kline,
    Message,
    ParseError,
    Reply,
    ServerShutdown,
    Ticker,
    Trade,
    parse,
    parse_agg_trades,
    parse_klines,
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


KLINE = {
    "e": "kline",
    "E": 1672515782136,
    "s": "BNBBTC",
    "k": {
        "t": 1672515780000,
        "T": 1672515839999,
        "s": "BNBBTC",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0015",
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}
TRADE_VALUE = Trade(
    event_time=1735689600123,
    symbol="BTCUSDT",
    trade_id=4412345678,
    price="93512.01000000",
    trade_time=1735689600122,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TRADE, Message(None, TRADE_VALUE)),
        ({"stream": "btcusdt@trade", "data": TRADE}, Message("btcusdt@trade", TRADE_VALUE)),
        (
            {
                "stream": "btcusdt@aggTrade",
                "data": {
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
            },
            Message(
                "btcusdt@aggTrade",
                AggTrade(
                    agg_id=3,
                    price="1.5",
                    quantity="2",
                    trade_time=4,
                    buyer_is_maker=True,
                    event_time=5,
                    symbol="BTCUSDT",
                ),
            ),
        ),
        (
            TICKER,
            Message(
                None,
                Ticker(
                    event_time=1735689600500,
                    symbol="BTCUSDT",
                    last="93512.01000000",
                    change="-412.50000000",
                    change_percent="-0.439",
                    open="93924.51000000",
                    high="94811.00000000",
                    low="92870.10000000",
                    volume="18234.55120000",
                    quote_volume="1710222333.12345678",
                    last_trade_id=4412345678,
                ),
            ),
        ),
        (
            {"stream": "bnbbtc@kline_1m", "data": KLINE},
            Message(
                "bnbbtc@kline_1m",
                Kline(
                    event_time=1672515782136,
                    symbol="BNBBTC",
                    candle=Candle(
                        open_time=1672515780000,
                        close_time=1672515839999,
                        interval="1m",
                        open="0.0010",
                        high="0.0025",
                        low="0.0015",
                        close="0.0020",
                        volume="1000",
                        trades=100,
                        closed=False,
                    ),
                ),
            ),
        ),
        (
            # The partial book has no event type: the stream's name says what it is.
            {
                "stream": "bnbbtc@depth20@100ms",
                "data": {
                    "lastUpdateId": 160,
                    "bids": [["0.0024", "10"]],
                    "asks": [["0.0026", "100"]],
                },
            },
            Message(
                "bnbbtc@depth20@100ms",
                Depth(last_update_id=160, bids=[("0.0024", "10")], asks=[("0.0026", "100")]),
            ),
        ),
        (
            {"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1770123456789}},
            Message("!serverShutdown", ServerShutdown(1770123456789)),
        ),
        ({"result": None, "id": 1}, Reply(1, None)),
        ({"result": ["btcusdt@trade"], "id": 3}, Reply(3, ["btcusdt@trade"])),
        (
            {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2},
            Reply(2, None, 2, "Invalid request: invalid stream"),
        ),
    ],
)
def test_parse_known_messages(raw: object, expected: object) -> None:
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
        json.dumps({**TRADE, "p": "1.5\n"}),
        json.dumps({**TRADE, "p": "-93512.01"}),
        json.dumps({**TRADE, "t": "12"}),
        json.dumps({**TRADE, "s": ""}),
        json.dumps({k: v for k, v in TRADE.items() if k != "E"}),
        json.dumps({"stream": "btcusdt@trade", "data": "oops"}),
        json.dumps({"stream": 5, "data": TRADE}),
        json.dumps({"stream": "btcusdt@depth20", "data": {"lastUpdateId": 1, "bids": [["1"]]}}),
        json.dumps({"stream": "btcusdt@depth20", "data": TRADE}),
        json.dumps({"stream": "btcusdt@kline_1m", "data": {**KLINE, "k": {"t": 1}}}),
        json.dumps({"hello": "world"}),
    ],
)
def test_parse_rejects_what_it_cannot_trust(raw: str) -> None:
    with pytest.raises(ParseError):
        parse(raw)


def test_rest_klines_become_candles_and_the_future_one_is_forming() -> None:
    raw = json.dumps(
        [
            [
                1499040000000,
                "0.0163",
                "0.8000",
                "0.0157",
                "0.0157",
                "148976.1",
                1499644799999,
                "2434.19",
                308,
                "1756.87",
                "28.46",
                "0",
            ],
            [
                4102444800000,
                "0.0157",
                "0.0160",
                "0.0150",
                "0.0159",
                "10",
                4102444859999,
                "0.159",
                3,
                "5",
                "0.08",
                "0",
            ],
        ]
    ).encode()
    first, forming = parse_klines(raw, "ETHBTC", "1m", fetched_ms=1735689600000)
    assert first == Candle(
        1499040000000,
        1499644799999,
        "1m",
        "0.0163",
        "0.8000",
        "0.0157",
        "0.0157",
        "148976.1",
        308,
        True,
    )
    assert forming.open_time == 4102444800000 and not forming.closed
    with pytest.raises(ParseError):
        parse_klines(b'[[1, "x"]]', "ETHBTC", "1m", 0)
    # A last row whose close time had passed when Binance answered is closed; a column
    # Binance might append one day is ignored; a negative price is not a price.
    row = [60_000, "1.0", "1.0", "1.0", "1.0", "1.0", 119_999, "1.0", 1, "1", "1", "0", "new"]
    [late] = parse_klines(json.dumps([row]).encode(), "ETHBTC", "1m", fetched_ms=120_000)
    [early] = parse_klines(json.dumps([row]).encode(), "ETHBTC", "1m", fetched_ms=119_000)
    assert late.closed and not early.closed
    with pytest.raises(ParseError):
        parse_klines(json.dumps([[*row[:1], "-1.0", *row[2:]]]).encode(), "ETHBTC", "1m", 0)


def test_rest_agg_trades_carry_the_symbol_and_the_taker_side() -> None:
    raw = (
        b'[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,'
        b'"T":1498793709153,"m":true,"M":true}]'
    )
    [trade] = parse_agg_trades(raw, "ETHBTC")
    assert (trade.symbol, trade.agg_id, trade.price, trade.side, trade.event_time) == (
        "ETHBTC",
        26129,
        "0.01633102",
        "sell",
        1498793709153,
    )
    with pytest.raises(ParseError):
        parse_agg_trades(b'{"code":-1121,"msg":"Invalid symbol."}', "ETHBTC")
