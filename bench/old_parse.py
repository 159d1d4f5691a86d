"""The pre-msgspec parser (app/market.py at 4df26b1), kept to compare with `app.market.parse`.

`python -m bench.parse` times both on the same messages. This is a frozen copy, not used by the
server: `json.loads`, then each field checked by hand into slotted dataclasses. Only the parsing
part is kept (the `Quote` that lived beside it is now `app.topics.price.Quote`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# Binance sends prices and quantities as plain non-negative decimals ("93512.01000000"); changes
# may be negative. Anything else is a malformed frame, not a price to show.
_DECIMAL = re.compile(r"-?\d{1,20}(\.\d{1,20})?")


class ParseError(ValueError):
    """A frame that is not JSON, or not of any shape we know."""


@dataclass(frozen=True, slots=True)
class Trade:
    """One `<symbol>@trade` event: the real-time last price."""

    symbol: str
    event_time: int
    trade_id: int
    price: str
    quantity: str
    trade_time: int
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class AggTrade:
    """One `<symbol>@aggTrade` event (fills of one taker order at one price)."""

    symbol: str
    event_time: int
    agg_id: int
    price: str
    quantity: str
    first_trade_id: int
    last_trade_id: int
    trade_time: int
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class Ticker:
    """One `<symbol>@ticker` (24hrTicker) or `@miniTicker` event: the rolling 24 h window."""

    symbol: str
    event_time: int
    last: str
    open: str
    high: str
    low: str
    volume: str
    quote_volume: str
    last_trade_id: int | None  # `L`; None on miniTicker, which does not carry it


@dataclass(frozen=True, slots=True)
class BookTicker:
    """One `<symbol>@bookTicker` event: best bid and ask (spot sends no event time)."""

    symbol: str
    update_id: int
    bid: str
    bid_qty: str
    ask: str
    ask_qty: str


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance's notice that this connection's server is about to go away."""

    event_time: int


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a control message (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ...)."""

    id: int | str | None
    result: Any
    error_code: int | None = None
    error_msg: str | None = None


Event = Trade | AggTrade | Ticker | BookTicker | ServerShutdown


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded data frame: the stream it came on (None on raw connections) and its event."""

    stream: str | None
    event: Event


def parse(raw: str | bytes) -> Frame | Reply:
    """Decode one upstream text frame; raise ParseError for anything we cannot trust."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ParseError(f"expected an object, got {type(msg).__name__}")
    if "id" in msg and ("result" in msg or "error" in msg):
        return _reply(msg)
    stream: str | None = None
    if "stream" in msg and "data" in msg:
        stream, msg = msg["stream"], msg["data"]
        if not isinstance(stream, str) or not isinstance(msg, dict):
            raise ParseError("combined frame with a malformed stream or data")
    try:
        return Frame(stream, _event(msg))
    except (KeyError, TypeError) as exc:
        raise ParseError(f"missing or mistyped field {exc}") from None


def _reply(msg: dict[str, Any]) -> Reply:
    error = msg.get("error")
    if error is None:
        return Reply(msg["id"], msg.get("result"))
    if isinstance(error, dict):
        return Reply(msg["id"], None, _int(error.get("code", -1)), str(error.get("msg", "")))
    return Reply(msg["id"], None, -1, str(error))


def _event(d: dict[str, Any]) -> Event:
    kind = d.get("e")
    if kind == "trade":
        return Trade(
            symbol=_symbol(d["s"]),
            event_time=_int(d["E"]),
            trade_id=_int(d["t"]),
            price=_dec(d["p"]),
            quantity=_dec(d["q"]),
            trade_time=_int(d["T"]),
            buyer_is_maker=_bool(d["m"]),
        )
    if kind == "aggTrade":
        return AggTrade(
            symbol=_symbol(d["s"]),
            event_time=_int(d["E"]),
            agg_id=_int(d["a"]),
            price=_dec(d["p"]),
            quantity=_dec(d["q"]),
            first_trade_id=_int(d["f"]),
            last_trade_id=_int(d["l"]),
            trade_time=_int(d["T"]),
            buyer_is_maker=_bool(d["m"]),
        )
    if kind in ("24hrTicker", "24hrMiniTicker"):
        return Ticker(
            symbol=_symbol(d["s"]),
            event_time=_int(d["E"]),
            last=_dec(d["c"]),
            open=_dec(d["o"]),
            high=_dec(d["h"]),
            low=_dec(d["l"]),
            volume=_dec(d["v"]),
            quote_volume=_dec(d["q"]),
            last_trade_id=_int(d["L"]) if kind == "24hrTicker" else None,
        )
    if kind == "serverShutdown":
        return ServerShutdown(event_time=_int(d["E"]))
    if kind is None and {"u", "s", "b", "a"} <= d.keys():
        return BookTicker(
            symbol=_symbol(d["s"]),
            update_id=_int(d["u"]),
            bid=_dec(d["b"]),
            bid_qty=_dec(d["B"]),
            ask=_dec(d["a"]),
            ask_qty=_dec(d["A"]),
        )
    raise ParseError(f"unknown event type {kind!r}")


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"{v!r} is not an integer")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError(f"{v!r} is not a boolean")
    return v


def _dec(v: Any) -> str:
    if type(v) is not str or not _DECIMAL.fullmatch(v):
        raise TypeError(f"{v!r} is not a decimal string")
    return v


def _symbol(v: Any) -> str:
    if type(v) is not str or not v:
        raise TypeError(f"{v!r} is not a symbol")
    return v
