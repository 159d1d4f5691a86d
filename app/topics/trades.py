"""The trade tape: the latest trades, newest first, from `<symbol>@aggTrade`.

On first view the tape is filled from REST `/api/v3/aggTrades`, so it is not empty on a quiet
market. Aggregate ids only ever grow, so a trade with an id already shown (overlapping
connections, or the REST answer meeting the stream) is dropped, and nothing older than the
newest shown is put on top. A viewer that reads slowly gets the newest tape, which holds the
latest `TRADES` trades: it may skip trades that scrolled off in between, as a tape does.
"""

from __future__ import annotations

from typing import Any

from app.market import AggTrade, Payload, parse_agg_trades
from app.symbols import SymbolInfo
from app.topics.key import Topic
from app.topics.panel import History, Panel

# Rows on the tape: about what a trading screen shows beside its book.
TRADES = 30
# How long a recent-trades answer may serve later openers: after that the stream has moved on.
AGG_TRADES_TTL = 2.0


class TradesPanel(Panel):
    template = "trades"
    render_interval_setting = "table_render_interval"

    def __init__(self, topic: Topic, info: SymbolInfo | None) -> None:
        super().__init__(topic, info)
        self.trades: list[AggTrade] = []  # newest first

    def own_streams(self) -> tuple[str, ...]:
        return (f"{self.topic.symbol.lower()}@aggTrade",)

    def apply(self, payload: Payload) -> bool:
        if not isinstance(payload, AggTrade):
            return False
        if self.trades and payload.agg_id <= self.trades[0].agg_id:
            return False
        self.trades.insert(0, payload)
        del self.trades[TRADES:]
        return True

    def history(self) -> History:
        return History(
            "/api/v3/aggTrades", {"symbol": self.topic.symbol, "limit": str(TRADES)}, AGG_TRADES_TTL
        )

    def seed(self, body: bytes, fetched_ms: int) -> bool:
        older = parse_agg_trades(body, self.topic.symbol)
        known = {t.agg_id for t in self.trades}
        merged = self.trades + [t for t in older if t.agg_id not in known]
        merged.sort(key=lambda t: t.agg_id, reverse=True)
        changed = merged[:TRADES] != self.trades
        self.trades = merged[:TRADES]
        return changed

    @property
    def has_data(self) -> bool:
        return bool(self.trades)

    @property
    def event_time(self) -> int | None:
        return self.trades[0].event_time if self.trades else None

    def context(self) -> dict[str, Any]:
        return {"trades": self.trades}

    def data(self) -> dict[str, Any]:
        return {
            "type": "trades",
            "topic": self.topic.name,
            "symbol": self.topic.symbol,
            "event_time": self.event_time,
            "trades": [
                {
                    "id": t.agg_id,
                    "price": t.price,
                    "qty": t.quantity,
                    "time": t.trade_time,
                    "side": t.side,
                }
                for t in self.trades
            ],
        }
