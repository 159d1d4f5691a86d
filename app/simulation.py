"""A simulated spot market: random-walk prices that produce Binance-shaped payloads.

Pure and synchronous: it keeps each symbol's last price, rolling 24 h window, recent aggregate
trades and candles, and makes the JSON values Binance would send for trades, aggregate trades,
tickers, book tickers, klines and partial order books, on the streams and from REST, plus the
exchangeInfo document. The demo exchange (`app.demo`) decides when to send them and to whom.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

# Symbol, base asset, quote asset, starting price, tick size, lot step. Prices are roughly where
# these markets have traded, so the demo looks plausible; they are simulated all the same.
MARKET: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("BTCUSDT", "BTC", "USDT", "93512.01", "0.01", "0.00001"),
    ("ETHUSDT", "ETH", "USDT", "3412.55", "0.01", "0.0001"),
    ("BNBUSDT", "BNB", "USDT", "652.30", "0.01", "0.001"),
    ("SOLUSDT", "SOL", "USDT", "187.42", "0.01", "0.001"),
    ("XRPUSDT", "XRP", "USDT", "2.1834", "0.0001", "0.1"),
    ("ADAUSDT", "ADA", "USDT", "0.9821", "0.0001", "0.1"),
    ("DOGEUSDT", "DOGE", "USDT", "0.38215", "0.00001", "1"),
    ("TRXUSDT", "TRX", "USDT", "0.2514", "0.0001", "0.1"),
    ("AVAXUSDT", "AVAX", "USDT", "41.27", "0.01", "0.01"),
    ("LINKUSDT", "LINK", "USDT", "22.814", "0.001", "0.01"),
    ("DOTUSDT", "DOT", "USDT", "8.412", "0.001", "0.01"),
    ("LTCUSDT", "LTC", "USDT", "104.51", "0.01", "0.001"),
    ("SHIBUSDT", "SHIB", "USDT", "0.00002417", "0.00000001", "1"),
    ("PEPEUSDT", "PEPE", "USDT", "0.00001934", "0.00000001", "1"),
    ("ETHBTC", "ETH", "BTC", "0.03649", "0.00001", "0.0001"),
    ("BNBBTC", "BNB", "BTC", "0.006976", "0.000001", "0.001"),
    ("SOLBTC", "SOL", "BTC", "0.002004", "0.000001", "0.01"),
    ("BTCFDUSD", "BTC", "FDUSD", "93501.12", "0.01", "0.00001"),
    ("BTCEUR", "BTC", "EUR", "88912.40", "0.01", "0.00001"),
    ("ETHEUR", "ETH", "EUR", "3244.81", "0.01", "0.0001"),
)

DAY_MS = 24 * 3600 * 1000
# Binance's kline intervals of fixed length, in ms; "1M" is a calendar month and handled apart.
INTERVAL_MS: dict[str, int] = {
    "1s": 1000,
    "1m": 60_000,
    "3m": 3 * 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "2h": 2 * 3_600_000,
    "4h": 4 * 3_600_000,
    "6h": 6 * 3_600_000,
    "8h": 8 * 3_600_000,
    "12h": 12 * 3_600_000,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
}
INTERVALS: tuple[str, ...] = (*INTERVAL_MS, "1M")
# Binance's weekly candles open on Monday 00:00 UTC; the epoch fell on a Thursday, four days before.
WEEK_OFFSET_MS = 4 * DAY_MS
# Binance answers at most 1000 klines or aggregate trades per REST call; keep as many candles.
MAX_CANDLES = 1000
AGG_HISTORY = 1000  # aggregate trades synthesised per symbol, before the live ones
MAX_AGG_TRADES = 2000  # kept for `fromId` and time queries; older ones are forgotten
# Binance opened in July 2017: synthesised candles reach no further back (2017-07-14 02:40 UTC).
LISTED_MS = 1_500_000_000_000
DAILY_SIGMA = 0.03  # volatility of synthesised history, about what large pairs show in a day
_EIGHT = Decimal("0.00000001")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def candle_open(interval: str, time_ms: int) -> int:
    """Open time of the `interval` candle holding `time_ms`, on Binance's UTC boundaries."""
    if interval == "1M":
        day = datetime.fromtimestamp(time_ms // 1000, UTC)
        return _month_start(day.year, day.month)
    length = INTERVAL_MS[interval]
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return (time_ms - offset) // length * length + offset


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at `open_ms`."""
    if interval == "1M":
        day = datetime.fromtimestamp(open_ms // 1000, UTC)
        return _month_start(day.year + day.month // 12, day.month % 12 + 1)
    return open_ms + INTERVAL_MS[interval]


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class AggTrade:
    """One aggregate trade: fills of one taker order at one price (trade ids `first`..`last`)."""

    id: int
    price: Decimal
    qty: Decimal
    first: int
    last: int
    time: int
    maker: bool

    def fields(self) -> dict[str, Any]:
        """The REST form; the stream adds `e`, `E` and `s` in front."""
        return {
            "a": self.id,
            "p": _fmt(self.price),
            "q": _fmt(self.qty),
            "f": self.first,
            "l": self.last,
            "T": self.time,
            "m": self.maker,
            "M": True,
        }


@dataclass
class Candle:
    """One kline: open and close time, prices, volumes and the range of trade ids it holds."""

    interval: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    taker_volume: Decimal = Decimal(0)  # bought by takers: trades whose buyer was not the maker
    taker_quote_volume: Decimal = Decimal(0)
    trades: int = 0
    first_id: int = -1  # Binance sends -1 for both ids while a candle has no trades
    last_id: int = -1
    closed: bool = False

    @classmethod
    def empty(cls, interval: str, open_time: int, price: Decimal) -> Candle:
        """A candle with no trades yet, every price at `price` (the previous close)."""
        close_time = next_open(interval, open_time) - 1
        return cls(interval, open_time, close_time, price, price, price, price)

    def add(self, price: Decimal, qty: Decimal, trade_id: int, taker_buy: bool) -> None:
        self.close = price
        self.high, self.low = max(self.high, price), min(self.low, price)
        self.volume += qty
        self.quote_volume += qty * price
        if taker_buy:
            self.taker_volume += qty
            self.taker_quote_volume += qty * price
        self.trades += 1
        self.last_id = trade_id
        if self.first_id == -1:
            self.first_id = trade_id

    def fields(self, symbol: str) -> dict[str, Any]:
        """The stream's `k` object."""
        return {
            "t": self.open_time,
            "T": self.close_time,
            "s": symbol,
            "i": self.interval,
            "f": self.first_id,
            "L": self.last_id,
            "o": _fmt(self.open),
            "c": _fmt(self.close),
            "h": _fmt(self.high),
            "l": _fmt(self.low),
            "v": _fmt(self.volume),
            "n": self.trades,
            "x": self.closed,
            "q": _fmt(self.quote_volume),
            "V": _fmt(self.taker_volume),
            "Q": _fmt(self.taker_quote_volume),
            "B": "0",
        }

    def row(self) -> list[Any]:
        """The REST form: one array, in `GET /api/v3/klines` order."""
        return [
            self.open_time,
            _fmt(self.open),
            _fmt(self.high),
            _fmt(self.low),
            _fmt(self.close),
            _fmt(self.volume),
            self.close_time,
            _fmt(self.quote_volume),
            self.trades,
            _fmt(self.taker_volume),
            _fmt(self.taker_quote_volume),
            "0",
        ]


@dataclass
class Candles:
    """One symbol's candles of one interval: the closed ones, oldest first, and the forming one."""

    interval: str
    forming: Candle
    closed: deque[Candle] = field(default_factory=lambda: deque(maxlen=MAX_CANDLES))

    def close_forming(self) -> Candle:
        """Close the forming candle and open the next one at the previous close."""
        done = self.forming
        done.closed = True
        self.closed.append(done)
        self.forming = Candle.empty(self.interval, done.close_time + 1, done.close)
        return done

    def roll(self, now: int) -> list[Candle]:
        """Close every candle whose close time has passed by `now`; returns them, oldest first."""
        done: list[Candle] = []
        while now > self.forming.close_time:
            done.append(self.close_forming())
            length = INTERVAL_MS.get(self.interval, 0)
            behind = (now - self.forming.open_time) // length if length else 0
            if behind > MAX_CANDLES:
                # After a long idle spell only the newest empty candles would be kept anyway.
                skipped = self.forming.open_time + (behind - MAX_CANDLES) * length
                self.forming = Candle.empty(self.interval, skipped, self.forming.close)
        return done


@dataclass
class Instrument:
    """One simulated symbol's state: last price, its rolling 24 h window, trades and candles."""

    symbol: str
    base: str
    quote: str
    price: Decimal
    tick: Decimal
    step: Decimal
    open: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    first_trade_id: int = 0
    trade_id: int = 0
    agg_id: int = 0
    book_id: int = 0
    last_qty: Decimal = Decimal(0)
    last_maker: bool = False
    trade_time: int = 0
    window_start: int = field(default_factory=lambda: now_ms() - DAY_MS)
    # Live aggregate trades, and older ones synthesised on first use (`Market.agg_history`).
    agg_trades: deque[AggTrade] = field(default_factory=lambda: deque(maxlen=MAX_AGG_TRADES))
    agg_history_made: bool = False
    # Candles by interval, each series made on first use (`Market.candles`).
    candles: dict[str, Candles] = field(default_factory=dict)


class Market:
    """All simulated instruments, advanced by `trade(symbol)` and read by the payload methods."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.instruments: dict[str, Instrument] = {}
        for symbol, base, quote, price, tick, step in MARKET:
            inst = Instrument(symbol, base, quote, Decimal(price), Decimal(tick), Decimal(step))
            # A believable 24 h history: open a few percent away, a range around both ends.
            drift = Decimal(str(self.rng.uniform(-0.04, 0.04)))
            inst.open = self._round(inst.price / (1 + drift), inst.tick)
            inst.high = max(inst.open, inst.price) * Decimal("1.012")
            inst.low = min(inst.open, inst.price) * Decimal("0.988")
            inst.high = self._round(inst.high, inst.tick)
            inst.low = self._round(inst.low, inst.tick)
            inst.volume = self._round(Decimal(self.rng.uniform(1e4, 5e6)) / inst.price, inst.step)
            inst.quote_volume = (inst.volume * inst.price).quantize(_EIGHT)
            inst.first_trade_id = self.rng.randrange(10**8, 10**9)
            inst.trade_id = inst.first_trade_id + self.rng.randrange(10**5, 10**6)
            inst.agg_id = inst.trade_id // 3
            inst.book_id = inst.trade_id * 7
            self.instruments[symbol] = inst

    @staticmethod
    def _round(value: Decimal, unit: Decimal) -> Decimal:
        return max(unit, (value / unit).quantize(Decimal(1), ROUND_HALF_EVEN) * unit)

    @staticmethod
    def _floor(value: Decimal, unit: Decimal) -> Decimal:
        return (value / unit).quantize(Decimal(1), ROUND_DOWN) * unit

    def _history_rng(self, symbol: str, what: str) -> random.Random:
        """A generator for one synthesised history, so it does not depend on when it is made."""
        return random.Random(f"{self.seed}/{symbol}/{what}" if self.seed is not None else None)

    def trade(
        self,
        symbol: str,
        price: Decimal | str | None = None,
        maker: bool | None = None,
    ) -> Instrument:
        """Advance `symbol` by one trade: a small random step of a few ticks or basis points.

        `price` replaces the random step, `maker` the random side. The trade becomes the newest
        aggregate trade and lands in the forming candle of every interval the symbol tracks
        (callers close candles whose time has passed first: `Candles.roll`).
        """
        inst = self.instruments[symbol]
        sigma = max(inst.tick * 2, inst.price * Decimal("0.00015"))
        step = Decimal(str(self.rng.gauss(0, 1))) * sigma
        inst.price = self._round(inst.price + step, inst.tick)
        if price is not None:
            inst.price = Decimal(price)
        inst.last_qty = self._round(
            Decimal(str(self.rng.expovariate(1.0))) * Decimal(500) / inst.price, inst.step
        )
        inst.last_maker = self.rng.random() < 0.5 if maker is None else maker
        inst.trade_time = now_ms()
        inst.trade_id += 1
        inst.agg_id += 1
        inst.book_id += self.rng.randrange(1, 5)
        inst.high, inst.low = max(inst.high, inst.price), min(inst.low, inst.price)
        inst.volume += inst.last_qty
        inst.quote_volume += inst.last_qty * inst.price
        inst.agg_trades.append(
            AggTrade(
                inst.agg_id,
                inst.price,
                inst.last_qty,
                inst.trade_id,
                inst.trade_id,
                inst.trade_time,
                inst.last_maker,
            )
        )
        for candles in inst.candles.values():
            candles.forming.add(inst.price, inst.last_qty, inst.trade_id, not inst.last_maker)
        return inst

    # -- history: aggregate trades and candles, synthesised on first use ------------------------

    def agg_history(self, symbol: str) -> deque[AggTrade]:
        """`symbol`'s recent aggregate trades, oldest first, the newest being the last trade.

        The live trades are recorded as they happen; the older history is synthesised on first
        call, ending just before the oldest recorded one, so ids and times run on without a gap.
        """
        inst = self.instruments[symbol]
        if inst.agg_history_made:
            return inst.agg_trades
        inst.agg_history_made = True
        rng = self._history_rng(symbol, "aggTrades")
        if inst.agg_trades:
            oldest = inst.agg_trades[0]
            newest_id, first, price = oldest.id - 1, oldest.first, oldest.price
            when = oldest.time - int(rng.expovariate(1 / 400))
        else:
            newest_id, first, price = inst.agg_id, inst.trade_id + 1, inst.price
            when = now_ms() - 1
        room = (inst.agg_trades.maxlen or 0) - len(inst.agg_trades)
        # The walk counts whole ticks and lot steps as ints, to keep the event loop free.
        ticks, step = max(1, round(price / inst.tick)), float(inst.step)
        for agg_id in range(newest_id, newest_id - min(AGG_HISTORY, room), -1):
            fills = 1 if rng.random() < 0.7 else rng.randint(2, 5)
            lots = max(1, round(rng.expovariate(1.0) * 500 * fills / (float(price) * step)))
            maker = rng.random() < 0.5
            agg = AggTrade(agg_id, price, lots * inst.step, first - fills, first - 1, when, maker)
            inst.agg_trades.appendleft(agg)
            first -= fills
            when -= int(rng.expovariate(1 / 400))
            ticks = max(1, ticks - round(rng.gauss(0, 1) * max(2.0, ticks * 0.00015)))
            price = ticks * inst.tick
        return inst.agg_trades

    def agg_trades(
        self,
        symbol: str,
        limit: int,
        from_id: int | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> list[dict[str, Any]]:
        """`GET /api/v3/aggTrades`: the newest `limit`, or the oldest from `from_id`/`start` on."""
        found = [
            agg
            for agg in self.agg_history(symbol)
            if (from_id is None or agg.id >= from_id)
            and (start is None or agg.time >= start)
            and (end is None or agg.time <= end)
        ]
        chosen = found[:limit] if from_id is not None or start is not None else found[-limit:]
        return [agg.fields() for agg in chosen]

    def candles(self, symbol: str, interval: str) -> Candles:
        """`symbol`'s candles of `interval`, made on first use: up to 1000 closed ones ending at a
        forming candle that opened on the current boundary and closes at the current price."""
        inst = self.instruments[symbol]
        if interval not in inst.candles:
            inst.candles[interval] = self._make_candles(inst, interval, now_ms())
        return inst.candles[interval]

    def _make_candles(self, inst: Instrument, interval: str, now: int) -> Candles:
        # A random walk backwards from the current price: each candle closes where the next one
        # opens, and trade ids count down from the last trade.
        rng = self._history_rng(inst.symbol, interval)
        open_time, close, last_id = candle_open(interval, now), inst.price, inst.trade_id
        made: list[Candle] = []
        while len(made) <= MAX_CANDLES and (not made or open_time >= LISTED_MS):
            days = (min(now, next_open(interval, open_time)) - open_time) / DAY_MS
            candle = self._synthesise(inst, rng, interval, open_time, close, days, last_id)
            if candle.trades:
                last_id = candle.first_id - 1
            made.append(candle)
            close, open_time = candle.open, candle_open(interval, open_time - 1)
        made.reverse()
        series = Candles(interval, made.pop())
        for candle in made:
            candle.closed = True
            series.closed.append(candle)
        return series

    def _synthesise(
        self,
        inst: Instrument,
        rng: random.Random,
        interval: str,
        open_time: int,
        close: Decimal,
        days: float,
        last_id: int,
    ) -> Candle:
        """One candle of the backward walk, `days` long so far, closing at `close`, its last trade
        `last_id`; price moves and volume grow with its length, as they do on the exchange."""
        # Prices in whole ticks and volumes in whole lot steps, counted as ints and floats: a
        # thousand candles then take milliseconds on the event loop the demo shares with the app.
        tick, tick_value, sigma = inst.tick, float(inst.tick), DAILY_SIGMA * math.sqrt(days)
        candle = Candle.empty(interval, open_time, close)
        opened = max(1, round(float(close) * math.exp(rng.gauss(0, sigma)) / tick_value))
        candle.open = opened * tick
        body_high, body_low = max(candle.open, close), min(candle.open, close)
        wick_up = 1 + abs(rng.gauss(0, sigma / 2))
        wick_down = max(0.5, 1 - abs(rng.gauss(0, sigma / 2)))
        candle.high = max(body_high, round(float(body_high) * wick_up / tick_value) * tick)
        candle.low = min(body_low, max(1, round(float(body_low) * wick_down / tick_value)) * tick)
        average = (candle.open + candle.high + candle.low + close) / 4
        notional = float(inst.quote_volume) * days * rng.lognormvariate(0, 0.6)
        trades = min(last_id, round(notional / rng.uniform(150, 600)))
        lots = int(notional / (float(average) * float(inst.step)))
        if lots > 0 and trades > 0:
            taker_lots = int(lots * rng.uniform(0.3, 0.7))
            candle.volume, candle.taker_volume = lots * inst.step, taker_lots * inst.step
            candle.quote_volume = candle.volume * average
            candle.taker_quote_volume = candle.taker_volume * average
            candle.trades, candle.first_id, candle.last_id = trades, last_id - trades + 1, last_id
        return candle

    def close_candle(self, symbol: str, interval: str) -> Candle:
        """Close `symbol`'s forming `interval` candle now; returns it."""
        return self.candles(symbol, interval).close_forming()

    def klines(
        self,
        symbol: str,
        interval: str,
        limit: int,
        start: int | None = None,
        end: int | None = None,
    ) -> list[list[Any]]:
        """`GET /api/v3/klines`, oldest first: the newest `limit`, or the oldest from `start` on;
        the forming candle comes last."""
        series = self.candles(symbol, interval)
        found = [
            candle
            for candle in (*series.closed, series.forming)
            if (start is None or candle.open_time >= start)
            and (end is None or candle.open_time <= end)
        ]
        chosen = found[:limit] if start is not None else found[-limit:]
        return [candle.row() for candle in chosen]

    def depth(self, symbol: str, levels: int = 20) -> dict[str, Any]:
        """A fresh snapshot of the top `levels` of the book: bids from one tick under the last
        price down, asks from the last price up, a tick or a few apart, random quantities."""
        inst = self.instruments[symbol]
        inst.book_id += self.rng.randrange(1, 20)
        return {
            "lastUpdateId": inst.book_id,
            "bids": self._book_side(inst, inst.price - inst.tick, -1, levels),
            "asks": self._book_side(inst, inst.price, 1, levels),
        }

    def _book_side(
        self, inst: Instrument, best: Decimal, direction: int, levels: int
    ) -> list[list[str]]:
        # Whole ticks and lot steps counted as ints: a 5000-level snapshot stays quick, and the
        # demo shares its event loop with the app.
        side: list[list[str]] = []
        ticks = math.floor(best / inst.tick) if direction < 0 else math.ceil(best / inst.tick)
        lot_value = float(inst.price * inst.step)  # quote value of one lot step
        while len(side) < levels and ticks >= 1:
            # Deeper levels hold more, as real books do.
            notional = self.rng.expovariate(1.0) * 2000 * (1 + len(side) / 4)
            lots = max(1, round(notional / lot_value))
            side.append([_fmt(ticks * inst.tick), _fmt(lots * inst.step)])
            ticks += direction * (1 + int(self.rng.expovariate(1.5)))
        return side

    # -- payloads, field for field as Binance sends them ------------------------------------------

    def trade_payload(
        self, inst: Instrument, event_time: int, maker: bool | None = None
    ) -> dict[str, Any]:
        return {
            "e": "trade",
            "E": event_time,
            "s": inst.symbol,
            "t": inst.trade_id,
            "p": _fmt(inst.price),
            "q": _fmt(inst.last_qty),
            "T": inst.trade_time or event_time - 1,
            "m": inst.last_maker if maker is None else maker,
            "M": True,
        }

    def agg_trade_payload(
        self, inst: Instrument, event_time: int, maker: bool | None = None
    ) -> dict[str, Any]:
        """The stream form of the newest aggregate trade."""
        newest = inst.agg_trades[-1] if inst.agg_trades else self.agg_history(inst.symbol)[-1]
        fields = newest.fields()
        if maker is not None:
            fields["m"] = maker
        return {"e": "aggTrade", "E": event_time, "s": inst.symbol, **fields}

    def kline_payload(
        self, symbol: str, interval: str, event_time: int, candle: Candle | None = None
    ) -> dict[str, Any]:
        """A kline event for `candle`, by default the forming one."""
        candle = candle or self.candles(symbol, interval).forming
        return {"e": "kline", "E": event_time, "s": symbol, "k": candle.fields(symbol)}

    def ticker_payload(self, inst: Instrument, event_time: int) -> dict[str, Any]:
        change = inst.price - inst.open
        pct = (change / inst.open * 100).quantize(Decimal("0.001"))
        weighted = inst.quote_volume / inst.volume if inst.volume else inst.price
        spread = inst.tick
        return {
            "e": "24hrTicker",
            "E": event_time,
            "s": inst.symbol,
            "p": _fmt(change),
            "P": str(pct),
            "w": _fmt(weighted),
            "x": _fmt(inst.open),
            "c": _fmt(inst.price),
            "Q": _fmt(inst.last_qty),
            "b": _fmt(inst.price - spread),
            "B": _fmt(inst.step * 1000),
            "a": _fmt(inst.price),
            "A": _fmt(inst.step * 300),
            "o": _fmt(inst.open),
            "h": _fmt(inst.high),
            "l": _fmt(inst.low),
            "v": _fmt(inst.volume),
            "q": _fmt(inst.quote_volume),
            "O": event_time - DAY_MS,
            "C": event_time,
            "F": inst.first_trade_id,
            "L": inst.trade_id,
            "n": inst.trade_id - inst.first_trade_id + 1,
        }

    def mini_ticker_payload(self, inst: Instrument, event_time: int) -> dict[str, Any]:
        return {
            "e": "24hrMiniTicker",
            "E": event_time,
            "s": inst.symbol,
            "c": _fmt(inst.price),
            "o": _fmt(inst.open),
            "h": _fmt(inst.high),
            "l": _fmt(inst.low),
            "v": _fmt(inst.volume),
            "q": _fmt(inst.quote_volume),
        }

    def book_ticker_payload(self, inst: Instrument) -> dict[str, Any]:
        return {
            "u": inst.book_id,
            "s": inst.symbol,
            "b": _fmt(inst.price - inst.tick),
            "B": _fmt(inst.step * 1000),
            "a": _fmt(inst.price),
            "A": _fmt(inst.step * 300),
        }

    def exchange_info(self) -> dict[str, Any]:
        """The `GET /api/v3/exchangeInfo` document, trimmed to what clients read."""
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                }
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": i.symbol,
                    "status": "TRADING",
                    "baseAsset": i.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": i.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "isSpotTradingAllowed": True,
                    "permissionSets": [["SPOT"]],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _fmt(i.tick),
                            "maxPrice": "1000000.00000000",
                            "tickSize": _fmt(i.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _fmt(i.step),
                            "maxQty": "9000000.00000000",
                            "stepSize": _fmt(i.step),
                        },
                    ],
                }
                for i in self.instruments.values()
            ],
        }


def _fmt(value: Decimal) -> str:
    """Binance's wire form: fixed point with eight decimals ('93512.01000000')."""
    return f"{value:.8f}"


def _dec(value: float) -> Decimal:
    """A float as the decimal it prints as (not its full binary expansion)."""
    return Decimal(repr(value))
