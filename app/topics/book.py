"""The order book: the top levels of each side from Binance's partial-depth stream.

`<symbol>@depth20@100ms` sends the whole top of the book ten times a second, so there is no diff
bookkeeping: each message replaces the book if its update id is newer. Prices and quantities are
shown exactly as Binance sent them; depth bars, spread and mid price are derived for display.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from app.market import Depth, Payload
from app.symbols import SymbolInfo
from app.topics.key import Topic
from app.topics.panel import Panel

# Levels per side: Binance's partial-depth streams offer 5, 10 or 20.
LEVELS = 20
# Depth bars are drawn in steps of this many percent (a class per step, as our
# Content-Security-Policy allows no inline style).
BAR_STEP = 5


class BookPanel(Panel):
    template = "book"
    own_streams_are_steady = True
    binance_time = False
    render_interval_setting = "table_render_interval"

    def __init__(self, topic: Topic, info: SymbolInfo | None) -> None:
        super().__init__(topic, info)
        self.book: Depth | None = None
        self.received_ms: int | None = None  # the partial book carries no event time

    def own_streams(self) -> tuple[str, ...]:
        return (f"{self.topic.symbol.lower()}@depth{LEVELS}@100ms",)

    def apply(self, payload: Payload) -> bool:
        if not isinstance(payload, Depth):
            return False
        if self.book is not None and payload.last_update_id <= self.book.last_update_id:
            return False  # a duplicate or an older book (overlapping connections)
        self.book = payload
        self.received_ms = time.time_ns() // 1_000_000
        return True

    @property
    def has_data(self) -> bool:
        return self.book is not None

    @property
    def event_time(self) -> int | None:
        return self.received_ms

    def data(self) -> dict[str, Any]:
        book = self.book
        return {
            "type": "book",
            "topic": self.topic.name,
            "symbol": self.topic.symbol,
            "event_time": self.received_ms,
            "last_update_id": None if book is None else book.last_update_id,
            "bids": [] if book is None else [list(level) for level in book.bids[:LEVELS]],
            "asks": [] if book is None else [list(level) for level in book.asks[:LEVELS]],
        }

    def context(self) -> dict[str, Any]:
        if self.book is None:
            return {"bids": [], "asks": [], "spread": None, "mid": None, "spread_pct": None}
        bids, asks = self.book.bids[:LEVELS], self.book.asks[:LEVELS]
        cumulative = {"bid": _cumulative(bids), "ask": _cumulative(asks)}
        deepest = max([*cumulative["bid"], *cumulative["ask"], Decimal(0)])
        spread = mid = pct = None
        if bids and asks:
            best_bid, best_ask = Decimal(bids[0][0]), Decimal(asks[0][0])
            spread = best_ask - best_bid
            mid = (best_ask + best_bid) / 2
            pct = (spread / mid * 100).quantize(Decimal("0.001")) if mid else None
        return {
            "bids": _levels(bids, cumulative["bid"], deepest),
            "asks": _levels(asks, cumulative["ask"], deepest),
            "spread": None if spread is None else str(spread),
            "mid": None if mid is None else str(mid),
            "spread_pct": None if pct is None else str(pct),
        }


def _cumulative(levels: list[tuple[str, str]]) -> list[Decimal]:
    total, out = Decimal(0), []
    for _, qty in levels:
        total += Decimal(qty)
        out.append(total)
    return out


def _levels(
    levels: list[tuple[str, str]], cumulative: list[Decimal], deepest: Decimal
) -> list[tuple[str, str, int]]:
    """(price, quantity, bar width in percent, rounded to BAR_STEP) per level, best first."""
    out = []
    for (price, qty), depth in zip(levels, cumulative, strict=True):
        width = int(depth / deepest * 100 / BAR_STEP + Decimal("0.5")) * BAR_STEP if deepest else 0
        out.append((price, qty, width))
    return out
