"""Topic names and parsing, and each panel's reducer: pure, no I/O."""

from __future__ import annotations

import json

import pytest

from app.config import Settings
from app.errors import InputError
from app.market import AggTrade, Candle, Depth, Kline, Ticker, Trade
from app.symbols import SymbolDirectory, SymbolInfo
from app.topics import make_panel
from app.topics.book import BookPanel
from app.topics.chart import ChartPanel
from app.topics.key import Topic, parse_request, parse_topic
from app.topics.panel import CANDLES
from app.topics.price import PricePanel, Quote
from app.topics.svg import chart, sparkline
from app.topics.trades import TRADES, TradesPanel

INFO = SymbolInfo("BTCUSDT", "TRADING", "BTC", "USDT", 2)
NOW_MS = 1_800_000_000_000  # when the REST answers in these tests were given


@pytest.fixture
def directory() -> SymbolDirectory:
    d = SymbolDirectory(Settings())
    d.known = {s: SymbolInfo(s, "TRADING", s[:3], "USDT", 2) for s in ("BTCUSDT", "ETHUSDT")}
    return d


def test_topic_names_and_event_names() -> None:
    assert Topic("chart", "BTCUSDT", "1m").name == "chart:BTCUSDT:1m"
    assert Topic("chart", "BTCUSDT", "1m").event == "chart-BTCUSDT-1m"
    assert Topic("book", "BTCUSDT").event == "book-BTCUSDT"
    assert make_panel(Topic("price", "BTCUSDT"), None).streams() == (
        "btcusdt@trade",
        "btcusdt@ticker",
    )
    # Every other panel also hears the ticker, Binance's once-a-second heartbeat for a symbol.
    assert make_panel(Topic("book", "BTCUSDT"), None).streams() == (
        "btcusdt@depth20@100ms",
        "btcusdt@ticker",
    )
    assert make_panel(Topic("chart", "ETHUSDT", "1M"), None).streams() == (
        "ethusdt@kline_1M",
        "ethusdt@ticker",
    )


def test_parse_topics(directory: SymbolDirectory) -> None:
    assert parse_topic(" book:btcusdt ", directory) == Topic("book", "BTCUSDT")
    assert parse_topic("chart:BTCUSDT:1M", directory) == Topic("chart", "BTCUSDT", "1M")
    assert parse_request(
        "trades:BTCUSDT,price:ETHUSDT", "ETHUSDT,BTCUSDT", directory, limit=10
    ) == (
        Topic("price", "ETHUSDT"),
        Topic("price", "BTCUSDT"),
        Topic("trades", "BTCUSDT"),
    )


@pytest.mark.parametrize(
    ("topics", "sentence"),
    [
        (
            "bogus:BTCUSDT",
            "unknown topic kind 'bogus' in 'bogus:BTCUSDT': use one of price, book, trades, "
            "chart, like book:BTCUSDT",
        ),
        ("book:NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        ("book:", "malformed topic 'book:': name a symbol, like book:BTCUSDT"),
        (
            "chart:BTCUSDT",
            "malformed topic 'chart:BTCUSDT': a chart needs an interval, like chart:BTCUSDT:1m",
        ),
        (
            "chart:BTCUSDT:7m",
            "unknown interval '7m': use one of 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, "
            "1d, 3d, 1w, 1M",
        ),
        (
            "book:BTCUSDT:1m",
            "malformed topic 'book:BTCUSDT:1m': only chart topics take an interval",
        ),
        (
            "book:BTC<b>",
            "malformed symbol 'BTC<b>': use letters and digits only, at most 20 characters, "
            "like BTCUSDT",
        ),
        (
            ",,",
            "no topics given: ask for some, like ?topics=price:BTCUSDT,book:BTCUSDT "
            "or ?symbols=BTCUSDT",
        ),
        (",".join(["book:BTCUSDT"] * 4), "too many topics (4): at most 3 per stream"),
    ],
)
def test_bad_topics_are_named(directory: SymbolDirectory, topics: str, sentence: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_request(topics, None, directory, limit=3)
    assert str(caught.value) == sentence


# -- price ------------------------------------------------------------------------------------


def _trade(trade_id: int, price: str, event_time: int = 1000) -> Trade:
    return Trade(event_time, "BTCUSDT", trade_id, price, event_time)


def _ticker(event_time: int, last: str, last_trade_id: int = 10) -> Ticker:
    return Ticker(
        event_time,
        "BTCUSDT",
        last,
        "5.00",
        "5.000",
        "100.00",
        "120.00",
        "90.00",
        "5",
        "500.5",
        last_trade_id,
    )


def test_quote_moves_with_trades_and_remembers_direction() -> None:
    q = Quote("BTCUSDT").with_trade(_trade(1, "100.00"))
    assert q is not None and q.price == "100.00" and q.direction == ""
    q = q.with_trade(_trade(2, "101.50", 1001))
    assert q is not None and (q.direction, q.event_time) == ("up", 1001)
    q = q.with_trade(_trade(3, "101.50", 1002))
    assert q is not None and q.direction == "up"
    q = q.with_trade(_trade(4, "99", 1003))
    assert q is not None and (q.direction, q.price) == ("down", "99")


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


def test_price_card_flashes_only_against_what_viewers_last_got() -> None:
    panel = PricePanel(Topic("price", "BTCUSDT"), INFO)
    assert panel.apply(_trade(1, "100.00", 60_000))
    assert panel.context()["changed"] is False  # the first price is not a move
    assert panel.apply(_trade(2, "101.00", 60_500))
    assert panel.apply(_trade(3, "100.00", 61_000))  # a burst that ends where it began
    assert panel.context()["changed"] is False
    assert panel.apply(_trade(4, "102.00", 125_000))
    assert panel.context()["changed"] is True
    assert panel.context()["changed"] is False  # a re-render (stale flag) does not flash


def test_sparkline_keeps_the_last_price_of_each_minute_seeded_from_klines() -> None:
    panel = PricePanel(Topic("price", "BTCUSDT"), INFO)
    panel.apply(_trade(7, "105.00", 180_100))  # live, newer than the REST answer's last minute
    rows = [
        [
            m * 60_000,
            "1",
            "1",
            "1",
            f"{100 + m}.00",
            "1",
            m * 60_000 + 59_999,
            "1",
            1,
            "1",
            "1",
            "0",
        ]
        for m in range(4)
    ]
    assert panel.seed(json.dumps(rows).encode(), NOW_MS)
    assert panel.minutes == [
        (0, "100.00"),
        (60_000, "101.00"),
        (120_000, "102.00"),
        (180_000, "105.00"),
    ]
    panel.apply(_trade(8, "99.00", 240_000))
    assert panel.minutes[-1] == (240_000, "99.00")
    assert len(sparkline([p for _, p in panel.minutes]).split()) == 5
    assert panel.context()["spark_trend"] == "down"


# -- book -------------------------------------------------------------------------------------


def test_book_takes_newer_snapshots_only_and_derives_spread_and_bars() -> None:
    panel = BookPanel(Topic("book", "BTCUSDT"), INFO)
    book = Depth(
        10, [("100.00", "1.00000000"), ("99.50", "3.00000000")], [("100.10", "2.00000000")]
    )
    assert panel.apply(book)
    assert not panel.apply(Depth(10, [], []))  # same update id: a duplicate
    assert not panel.apply(Depth(9, [], []))
    ctx = panel.context()
    assert ctx["bids"] == [("100.00", "1.00000000", 25), ("99.50", "3.00000000", 100)]
    assert ctx["asks"] == [("100.10", "2.00000000", 50)]
    assert (ctx["spread"], ctx["mid"], ctx["spread_pct"]) == ("0.10", "100.05", "0.100")


# -- trades -----------------------------------------------------------------------------------


def _agg(agg_id: int, maker: bool = False) -> AggTrade:
    return AggTrade(agg_id, "1.00", "2.00", 1000 + agg_id, maker, 2000 + agg_id, "BTCUSDT")


def test_trades_newest_first_never_repeating_or_going_back() -> None:
    panel = TradesPanel(Topic("trades", "BTCUSDT"), INFO)
    for agg_id in (5, 6, 6, 4, 7):
        panel.apply(_agg(agg_id))
    assert [t.agg_id for t in panel.trades] == [7, 6, 5]
    history = [
        {"a": i, "p": "1.00", "q": "1", "f": i, "l": i, "T": i, "m": True, "M": True}
        for i in range(1, 7)
    ]
    assert panel.seed(json.dumps(history).encode(), NOW_MS)
    assert [t.agg_id for t in panel.trades] == [7, 6, 5, 4, 3, 2, 1]
    assert panel.trades[-1].side == "sell" and panel.trades[0].side == "buy"
    for agg_id in range(8, 8 + TRADES):
        panel.apply(_agg(agg_id))
    assert len(panel.trades) == TRADES and panel.trades[0].agg_id == 7 + TRADES


# -- chart ------------------------------------------------------------------------------------


def _candle(minute: int, close: str, closed: bool = False) -> Candle:
    t = minute * 60_000
    return Candle(t, t + 59_999, "1m", "100.00", "110.00", "90.00", close, "5.0", 3, closed)


def _kline(minute: int, close: str, closed: bool = False, event_time: int | None = None) -> Kline:
    e = event_time if event_time is not None else minute * 60_000 + 1000
    return Kline(e, "BTCUSDT", _candle(minute, close, closed))


def test_chart_keeps_closed_candles_final_and_the_window_bounded() -> None:
    panel = ChartPanel(Topic("chart", "BTCUSDT", "1m"), INFO)
    assert panel.apply(_kline(1, "101.00"))
    assert panel.apply(_kline(1, "102.00", closed=True, event_time=61_500))
    assert not panel.apply(_kline(1, "999.00", event_time=61_900))  # after the close: final
    assert not panel.apply(
        Kline(1, "BTCUSDT", Candle(0, 1, "5m", "1", "1", "1", "1", "1", 1, False))
    )
    rows = [
        [
            m * 60_000,
            "100.00",
            "110.00",
            "90.00",
            f"{m}.00",
            "5.0",
            m * 60_000 + 59_999,
            "1",
            1,
            "1",
            "1",
            "0",
        ]
        for m in range(3)
    ]
    assert panel.seed(json.dumps(rows).encode(), NOW_MS)
    assert [(c.open_time, c.close) for c in panel.candles.values()] == [
        (0, "0.00"),
        (60_000, "102.00"),
        (120_000, "2.00"),
    ]  # the stream's candle beats the REST row for the same minute
    for minute in range(3, 3 + CANDLES):
        panel.apply(_kline(minute, "100.00", closed=True))
    assert len(panel.candles) == CANDLES and min(panel.candles) == 3 * 60_000
    assert not panel.apply(_kline(0, "1.00"))  # older than the window


def test_chart_never_loses_a_close() -> None:
    panel = ChartPanel(Topic("chart", "BTCUSDT", "1m"), INFO)
    # REST history as of 00:00:50: the 00:00 candle was still forming then.
    rows = [[0, "100.00", "110.00", "90.00", "104.00", "5.0", 59_999, "1", 1, "1", "1", "0"]]
    panel.seed(json.dumps(rows).encode(), fetched_ms=50_000)
    assert not panel.candles[0].closed
    # The stream's close is final, whatever REST said.
    assert panel.apply(_kline(0, "105.00", closed=True, event_time=60_000))
    assert panel.candles[0].close == "105.00" and not panel.history_due
    panel.seed(json.dumps(rows).encode(), fetched_ms=70_000)  # an old cached answer, "closed"
    assert panel.candles[0].close == "105.00"
    # A new candle starts but the stream never closed the one before: the panel asks for REST.
    assert panel.apply(_kline(1, "106.00", event_time=61_000))
    assert not panel.history_due
    assert panel.apply(_kline(2, "107.00", event_time=121_500))
    assert panel.history_due
    closed_by_rest = [
        [60_000, "100.00", "110.00", "90.00", "106.50", "5.0", 119_999, "1", 1, "1", "1", "0"],
        [120_000, "106.50", "107.00", "106.50", "107.00", "1.0", 179_999, "1", 1, "1", "1", "0"],
    ]
    assert panel.seed(json.dumps(closed_by_rest).encode(), fetched_ms=121_600)
    assert panel.candles[60_000].close == "106.50" and panel.candles[60_000].closed
    assert panel.candles[120_000].close == "107.00"


def test_price_card_time_never_goes_back() -> None:
    q = Quote("BTCUSDT").with_trade(_trade(11, "106.00", 2000))
    assert q is not None
    later = q.with_ticker(_ticker(1500, "105.00", last_trade_id=10))
    assert later is not None and later.event_time == 2000 and later.price == "106.00"
    assert Quote("X", price="1", open="0.00000000000000000001").change() is not None
    assert Quote("X", price="1e30", open="1e-30").change() is None


def test_axis_labels_for_tiny_prices_and_flat_charts() -> None:
    tiny = [
        Candle(
            0, 59_999, "1m", "0.00000055", "0.00000066", "0.00000055", "0.00000061", "9", 1, True
        )
    ]
    labels = [label for _, label in chart(tiny, 60, 60_000, 8).price_ticks]
    assert labels and all(label.startswith("0.000000") and "E" not in label for label in labels)
    flat = [Candle(0, 59_999, "1m", "0.9998", "0.9999", "0.9998", "0.9998", "9", 1, True)]
    labels = [label for _, label in chart(flat, 60, 60_000, 4).price_ticks]
    assert len(labels) == len(set(labels)) and labels


def test_chart_layout_puts_the_newest_candle_at_the_right_edge() -> None:
    candles = [_candle(0, "105.00", True), _candle(1, "95.00")]
    layout = chart(candles, 60, 60_000, 2)
    assert [s.direction for s in layout.candles] == ["up", "down"]
    assert layout.last_label == "95.00"
    # 95.00 would sit under the last-price marker (95.00 too), so it is left out.
    assert [label for _, label in layout.price_ticks] == ["90.00", "100.00", "105.00", "110.00"]
    # The newest candle's wick sits in the last of 60 columns, left of the price axis.
    x = float(layout.candles[-1].body.split()[0][1:])
    assert 630 < x < 720 - 72
