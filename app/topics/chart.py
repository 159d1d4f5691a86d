"""The candlestick chart of one interval: history from REST klines, then live from the stream.

`<symbol>@kline_<interval>` sends the forming candle every two seconds and a final update
(`closed`) when it ends. Candles are keyed by open time: a stream update replaces the REST row
for the same candle, a close from the stream is final, and the window keeps the newest
`CANDLES`. When a new candle starts before the stream closed the previous one (a reconnect, or
REST history older than the close), the history is fetched again, so no close is ever lost.
Every render carries the whole window, so a viewer that reads slowly and skips renders still
ends up with every closed candle exactly as Binance closed it.
"""

from __future__ import annotations

from typing import Any

from app.market import Candle, Kline, Payload, parse_klines
from app.symbols import SymbolInfo
from app.topics.key import INTERVALS, Topic
from app.topics.panel import CANDLES, History, Panel, klines_history
from app.topics.svg import chart


class ChartPanel(Panel):
    template = "chart"
    own_streams_are_steady = True

    def __init__(self, topic: Topic, info: SymbolInfo | None) -> None:
        super().__init__(topic, info)
        self.candles: dict[int, Candle] = {}  # by open time
        self.updated: dict[int, int] = {}  # open time -> event time of its latest update
        self.final: set[int] = set()  # open times the stream closed: never changed again
        self.newest_event: int | None = None

    def own_streams(self) -> tuple[str, ...]:
        return (f"{self.topic.symbol.lower()}@kline_{self.topic.interval}",)

    def apply(self, payload: Payload) -> bool:
        if not isinstance(payload, Kline) or payload.candle.interval != self.topic.interval:
            return False
        candle = payload.candle
        start = candle.open_time
        known = self.candles.get(start)
        if start in self.final:
            return False
        if not candle.closed and payload.event_time < self.updated.get(start, -1):
            return False  # an older update (overlapping connections); equal times are in order
        if known is None and self.candles:
            if len(self.candles) >= CANDLES and start < min(self.candles):
                return False  # older than the window
            newest = max(self.candles)
            if start > newest and newest not in self.final:
                # A new candle, and the stream never closed the one before: its close came
                # while we were not listening. REST has it.
                self.history_due = True
        if candle.closed:
            self.final.add(start)
        self.candles[start] = candle
        self.updated[start] = payload.event_time
        self.newest_event = max(self.newest_event or 0, payload.event_time)
        self._trim()
        return True

    def history(self) -> History:
        return klines_history(self.topic.symbol, self.topic.interval)

    def seed(self, body: bytes, fetched_ms: int) -> bool:
        rows = parse_klines(body, self.topic.symbol, self.topic.interval, fetched_ms)
        before = dict(self.candles)
        for candle in rows:
            start = candle.open_time
            known = self.candles.get(start)
            # What the stream sent is newer than a REST row for the same candle, unless REST
            # has it closed and the stream never closed it (the close came while we were away).
            if known is None or (candle.closed and start not in self.final):
                self.candles[start] = candle
        self._trim()
        if rows and self.newest_event is None:
            self.newest_event = rows[-1].close_time if rows[-1].closed else rows[-1].open_time
        return self.candles != before

    def _trim(self) -> None:
        if len(self.candles) > CANDLES or list(self.candles) != sorted(self.candles):
            keep = sorted(self.candles)[-CANDLES:]
            self.candles = {t: self.candles[t] for t in keep}
            self.updated = {t: e for t, e in self.updated.items() if t in self.candles}
            self.final &= self.candles.keys()

    @property
    def has_data(self) -> bool:
        return bool(self.candles)

    @property
    def event_time(self) -> int | None:
        return self.newest_event

    def data(self) -> dict[str, Any]:
        return {
            "type": "candles",
            "topic": self.topic.name,
            "symbol": self.topic.symbol,
            "interval": self.topic.interval,
            "event_time": self.newest_event,
            "candles": [
                {
                    "open_time": c.open_time,
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "closed": c.closed,
                }
                for c in self.candles.values()
            ],
        }

    def context(self) -> dict[str, Any]:
        candles = list(self.candles.values())
        decimals = self.info.decimals if self.info else None
        layout = (
            chart(candles, CANDLES, INTERVALS[self.topic.interval], decimals) if candles else None
        )
        return {"interval": self.topic.interval, "layout": layout}
