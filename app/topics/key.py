"""Topic names: what one live panel of one symbol is called, and how user input becomes one.

A topic is `kind:SYMBOL` or `chart:SYMBOL:INTERVAL`; its SSE event name is the topic with `:`
replaced by `-`. Parsing checks the kind, the symbol (through the symbol directory, so a URL can
never open an arbitrary upstream subscription) and the interval, and raises `TopicError` with a
sentence that names the bad part. Nothing here holds state.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InputError
from app.symbols import MAX_SYMBOL_LENGTH, SymbolDirectory, describe

KINDS = ("price", "book", "trades", "chart")
# Binance's kline intervals, shortest first, with their length in ms (a month counts 31 days;
# only the chart's time labels use it).
INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 2_678_400_000,
}
DEFAULT_INTERVAL = "1m"
# The interval switch on the market page: the ones people reach for.
SWITCH_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w")
# Longest topic we read: "chart:" + a symbol + ":" + an interval, with room to spare.
_MAX_TOPIC_LENGTH = len("chart::") + MAX_SYMBOL_LENGTH + 4


class TopicError(InputError):
    """User input that names no usable topic; the message is a sentence fit for a 400."""


@dataclass(frozen=True, slots=True)
class Topic:
    """One live panel of one symbol: `price:BTCUSDT`, `chart:BTCUSDT:1m`."""

    kind: str
    symbol: str
    interval: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.symbol}" + (f":{self.interval}" if self.interval else "")

    @property
    def event(self) -> str:
        """The SSE event name that carries this topic's fragment."""
        return self.name.replace(":", "-")

    def __str__(self) -> str:
        return self.name


def price(symbol: str) -> Topic:
    return Topic("price", symbol)


def check_interval(text: str) -> str:
    """A kline interval as Binance names it (case matters: 1m is a minute, 1M a month)."""
    interval = text.strip()
    if interval not in INTERVALS:
        raise TopicError(f"unknown interval {describe(text)}: use one of {', '.join(INTERVALS)}")
    return interval


# Topics asked for so far, each kept once. Bounded, because without the symbol list any
# well-formed symbol passes the check.
_INTERNED: dict[Topic, Topic] = {}
_MAX_INTERNED = 100_000


def parse_topic(text: str, directory: SymbolDirectory) -> Topic:
    """One topic from user input, checked; raises TopicError naming the bad part. The same
    topic is the same object for every viewer (a stream holds its topics for hours)."""
    topic = _parse_topic(text, directory)
    return _INTERNED.setdefault(topic, topic) if len(_INTERNED) < _MAX_INTERNED else topic


def _parse_topic(text: str, directory: SymbolDirectory) -> Topic:
    raw = text.strip()
    if not raw:
        raise TopicError("empty topic: name one, like price:BTCUSDT")
    if len(raw) > _MAX_TOPIC_LENGTH:
        raise TopicError(f"malformed topic {describe(raw)}: too long")
    kind, _, rest = raw.partition(":")
    if kind not in KINDS:
        raise TopicError(
            f"unknown topic kind {describe(kind)} in {describe(raw)}: "
            f"use one of {', '.join(KINDS)}, like book:BTCUSDT"
        )
    symbol_text, _, interval = rest.partition(":")
    if not symbol_text:
        raise TopicError(f"malformed topic {describe(raw)}: name a symbol, like {kind}:BTCUSDT")
    symbol = directory.check(symbol_text)
    if kind == "chart":
        if not interval:
            raise TopicError(
                f"malformed topic {describe(raw)}: a chart needs an interval, like "
                f"chart:{symbol}:1m"
            )
        return Topic(kind, symbol, check_interval(interval))
    if interval:
        raise TopicError(f"malformed topic {describe(raw)}: only chart topics take an interval")
    return Topic(kind, symbol)


def parse_request(
    topics: str | None, symbols: str | None, directory: SymbolDirectory, limit: int
) -> tuple[Topic, ...]:
    """`?topics=` and `?symbols=` (shorthand for price topics) together, de-duplicated in order,
    at most `limit` in all."""
    parts: list[str] = []
    if symbols is not None:
        parts += [f"price:{s}" for s in symbols.split(",") if s.strip()]
        if not parts and symbols.strip(", "):
            raise TopicError("malformed symbol list: name symbols, like ?symbols=BTCUSDT")
    if topics is not None:
        parts += [t for t in topics.split(",") if t.strip()]
    if len(parts) > limit:
        raise TopicError(f"too many topics ({len(parts)}): at most {limit} per stream")
    found = tuple(dict.fromkeys(parse_topic(p, directory) for p in parts))
    if not found:
        raise TopicError(
            "no topics given: ask for some, like ?topics=price:BTCUSDT,book:BTCUSDT "
            "or ?symbols=BTCUSDT"
        )
    return found
