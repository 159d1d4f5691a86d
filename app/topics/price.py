"""The price card: the last trade price, the 24 h figures, and an hour's sparkline.

Trades move the price at once; the ticker brings the 24 h window every second. The sparkline
holds one closing price a minute: an hour of them from REST klines (the same call that seeds a
1m chart), then extended by every trade.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from app.market import Payload, Ticker, Trade, parse_klines
from app.symbols import SymbolInfo
from app.topics.key import Topic
from app.topics.panel import CANDLES, History, Panel, klines_history
from app.topics.svg import sparkline

_MINUTE = 60_000


@dataclass(frozen=True, slots=True)
class Quote:
    """What the card shows for one symbol, built up from trades and tickers.

    `event_time` is the Binance `E` of the update that produced this quote; `direction` is "up"
    or "down" against the previous different price and stays until the price moves the other way.
    """

    symbol: str
    price: str | None = None
    event_time: int | None = None
    trade_id: int = -1
    direction: str = ""
    open: str | None = None
    change_24h: str | None = None  # Binance's own 24 h change and percentage (ticker p, P)
    change_percent_24h: str | None = None
    high: str | None = None
    low: str | None = None
    volume: str | None = None
    quote_volume: str | None = None
    ticker_time: int = -1

    @property
    def has_price(self) -> bool:
        return self.price is not None

    def change(self) -> tuple[str, str] | None:
        """Absolute and percent change of the last price against the 24 h open, as text."""
        if self.price is None or self.open is None:
            return None
        try:
            last, first = Decimal(self.price), Decimal(self.open)
        except InvalidOperation:
            return None
        diff = last - first
        try:
            pct = (diff / first * 100).quantize(Decimal("0.01")) if first else Decimal(0)
        except InvalidOperation:
            return None  # a percentage too large to show (a price from nearly zero)
        return str(diff), str(pct)

    def with_trade(self, t: Trade) -> Quote | None:
        """The quote after trade `t`, or None when `t` is not newer than what is shown."""
        if t.trade_id <= self.trade_id:
            return None  # a duplicate (overlapping connections) or out of order: never go back
        high, low = self.high, self.low
        if high is not None and Decimal(t.price) > Decimal(high):
            high = t.price
        if low is not None and Decimal(t.price) < Decimal(low):
            low = t.price
        return replace(
            self,
            trade_id=t.trade_id,
            event_time=max(t.event_time, self.event_time or 0),
            high=high,
            low=low,
            price=t.price,
            direction=_direction(self, t.price),
        )

    def with_ticker(self, k: Ticker) -> Quote | None:
        """The quote after ticker `k`, or None when `k` is not newer than the last ticker."""
        if k.event_time <= self.ticker_time:
            return None
        fields: dict[str, Any] = {
            "open": k.open,
            "change_24h": k.change,
            "change_percent_24h": k.change_percent,
            "high": k.high,
            "low": k.low,
            "volume": k.volume,
            "quote_volume": k.quote_volume,
            "ticker_time": k.event_time,
            # Never back in time: a ticker built before the last trade we showed.
            "event_time": max(k.event_time, self.event_time or 0),
        }
        # The ticker's own last price counts only if it is newer than the last trade we saw
        # (no trade yet, or trades missed while reconnecting).
        if self.price is None or k.last_trade_id > self.trade_id:
            fields.update(price=k.last, direction=_direction(self, k.last))
            fields["trade_id"] = k.last_trade_id
        return replace(self, **fields)


def _direction(q: Quote, price: str) -> str:
    if q.price is not None and price != q.price:
        return "up" if Decimal(price) > Decimal(q.price) else "down"
    return q.direction


class PricePanel(Panel):
    template = "quote"

    def __init__(self, topic: Topic, info: SymbolInfo | None) -> None:
        super().__init__(topic, info)
        self.quote = Quote(topic.symbol)
        self.minutes: list[tuple[int, str]] = []  # (minute open time ms, last price in it)
        self._shown_price: str | None = None

    def own_streams(self) -> tuple[str, ...]:
        low = self.topic.symbol.lower()
        return (f"{low}@trade", f"{low}@ticker")

    def apply(self, payload: Payload) -> bool:
        if isinstance(payload, Trade):
            quote = self.quote.with_trade(payload)
            if quote is not None:
                self._add_point(payload.trade_time // _MINUTE * _MINUTE, payload.price)
        elif isinstance(payload, Ticker):
            quote = self.quote.with_ticker(payload)
        else:
            return False
        if quote is None:
            return False  # out of order or a duplicate: what is shown is already newer
        self.quote = quote
        return True

    def history(self) -> History:
        return klines_history(self.topic.symbol, "1m")

    def seed(self, body: bytes, fetched_ms: int) -> bool:
        candles = parse_klines(body, self.topic.symbol, "1m", fetched_ms)
        live = dict(self.minutes)
        # Trades seen live are newer than the REST answer for the same minute.
        merged = {c.open_time: c.close for c in candles} | live
        self.minutes = sorted(merged.items())[-CANDLES:]
        return bool(candles)

    def _add_point(self, minute: int, price: str) -> None:
        if self.minutes and self.minutes[-1][0] == minute:
            self.minutes[-1] = (minute, price)
        elif not self.minutes or minute > self.minutes[-1][0]:
            self.minutes.append((minute, price))
            del self.minutes[:-CANDLES]

    @property
    def has_data(self) -> bool:
        return self.quote.has_price

    @property
    def event_time(self) -> int | None:
        return self.quote.event_time

    def data(self) -> dict[str, Any]:
        q = self.quote
        return {
            "type": "price",
            "symbol": q.symbol,
            "price": q.price,
            "event_time": q.event_time,
            "change": q.change_24h,
            "change_percent": q.change_percent_24h,
            "high": q.high,
            "low": q.low,
            "volume": q.volume,
            "quote_volume": q.quote_volume,
        }

    def context(self) -> dict[str, Any]:
        price = self.quote.price
        # Flash only when the price moved since the fragment viewers last got, so a render
        # that only changes the stale flag (or coalesces a burst) never flashes falsely.
        changed = self._shown_price is not None and price != self._shown_price
        self._shown_price = price
        closes = [p for _, p in self.minutes]
        return {
            "quote": self.quote,
            "changed": changed,
            "spark": sparkline(closes),
            "spark_trend": _trend(closes),
        }


def _trend(closes: list[str]) -> str:
    if len(closes) < 2 or closes[0] == closes[-1]:
        return ""
    return "up" if Decimal(closes[-1]) > Decimal(closes[0]) else "down"
