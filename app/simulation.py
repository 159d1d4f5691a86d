"""A simulated spot market: random-walk prices that produce Binance-shaped payloads.

Pure and synchronous: it makes the JSON objects (`dict`s) that Binance would send for trades,
aggregate trades, 24 h tickers, mini tickers and book tickers, and the exchangeInfo document.
The demo exchange (`app.demo`) decides when to send them and to whom.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Instrument:
    """One simulated symbol's state: last price and its rolling 24 h window."""

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
    window_start: int = field(default_factory=lambda: now_ms() - DAY_MS)


class Market:
    """All simulated instruments, advanced by `trade(symbol)` and read by the payload methods."""

    def __init__(self, seed: int | None = None) -> None:
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
            inst.quote_volume = (inst.volume * inst.price).quantize(Decimal("0.00000001"))
            inst.first_trade_id = self.rng.randrange(10**8, 10**9)
            inst.trade_id = inst.first_trade_id + self.rng.randrange(10**5, 10**6)
            inst.agg_id = inst.trade_id // 3
            inst.book_id = inst.trade_id * 7
            self.instruments[symbol] = inst

    @staticmethod
    def _round(value: Decimal, unit: Decimal) -> Decimal:
        return max(unit, (value / unit).quantize(Decimal(1), ROUND_HALF_EVEN) * unit)

    def trade(self, symbol: str) -> Instrument:
        """Advance `symbol` by one trade: a small random step of a few ticks or basis points."""
        inst = self.instruments[symbol]
        sigma = max(inst.tick * 2, inst.price * Decimal("0.00015"))
        step = Decimal(str(self.rng.gauss(0, 1))) * sigma
        inst.price = self._round(inst.price + step, inst.tick)
        inst.last_qty = self._round(
            Decimal(str(self.rng.expovariate(1.0))) * Decimal(500) / inst.price, inst.step
        )
        inst.trade_id += 1
        inst.agg_id += 1
        inst.book_id += self.rng.randrange(1, 5)
        inst.high, inst.low = max(inst.high, inst.price), min(inst.low, inst.price)
        inst.volume += inst.last_qty
        inst.quote_volume += inst.last_qty * inst.price
        return inst

    # -- payloads, field for field as Binance sends them (shared/binance-streams.md section 4) --

    def trade_payload(self, inst: Instrument, event_time: int, maker: bool) -> dict[str, Any]:
        return {
            "e": "trade",
            "E": event_time,
            "s": inst.symbol,
            "t": inst.trade_id,
            "p": _fmt(inst.price),
            "q": _fmt(inst.last_qty),
            "T": event_time - 1,
            "m": maker,
            "M": True,
        }

    def agg_trade_payload(self, inst: Instrument, event_time: int, maker: bool) -> dict[str, Any]:
        return {
            "e": "aggTrade",
            "E": event_time,
            "s": inst.symbol,
            "a": inst.agg_id,
            "p": _fmt(inst.price),
            "q": _fmt(inst.last_qty),
            "f": inst.trade_id,
            "l": inst.trade_id,
            "T": event_time - 1,
            "m": maker,
            "M": True,
        }

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
            "w": _fmt(weighted.quantize(Decimal("0.00000001"))),
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
            "q": _fmt(inst.quote_volume.quantize(Decimal("0.00000001"))),
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
            "q": _fmt(inst.quote_volume.quantize(Decimal("0.00000001"))),
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
