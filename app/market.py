"""Market messages: Binance's JSON decoded and validated into typed values in one step.

Pure data, no I/O. msgspec decodes each upstream message straight into the structs below and
rejects, with a `ParseError`, anything of the wrong shape or type, so no panel ever sees a
half-checked payload. Prices and quantities stay the decimal strings Binance sent (never a float
round-trip); a string that is not a plain decimal is a malformed message. The combined stream's
wrapper names the stream, and that name decides the payload type where Binance sends no event
type (the partial book). REST answers for chart history and recent trades decode here too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Raw, Struct, field

# Binance sends prices and quantities as plain non-negative decimals ("93512.01000000"); none of
# the fields we read can be negative. Anything else is a malformed message, not a price to show.
Dec = Annotated[str, msgspec.Meta(pattern=r"^\d{1,20}(\.\d{1,20})?\Z")]
# The ticker's 24 h change and its percentage may be negative.
SignedDec = Annotated[str, msgspec.Meta(pattern=r"^-?\d{1,20}(\.\d{1,20})?\Z")]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
_DEPTH_STREAM = re.compile(r"@depth(5|10|20)(@\d+ms)?$")


class ParseError(ValueError):
    """A message that is not JSON, or not of any shape we know."""


class Trade(Struct, frozen=True, tag_field="e", tag="trade"):
    """One `<symbol>@trade` event: the real-time last price."""

    event_time: int = field(name="E")
    symbol: Symbol = field(name="s")
    trade_id: int = field(name="t")
    price: Dec = field(name="p")
    trade_time: int = field(name="T")


class AggTrade(Struct, frozen=True, tag_field="e", tag="aggTrade"):
    """One `<symbol>@aggTrade` event (fills of one taker order at one price), or one entry of
    REST `/api/v3/aggTrades`, which carries no `e`, `E` or `s` (the caller knows the symbol)."""

    agg_id: int = field(name="a")
    price: Dec = field(name="p")
    quantity: Dec = field(name="q")
    trade_time: int = field(name="T")
    buyer_is_maker: bool = field(name="m")
    event_time: int = field(name="E", default=0)
    symbol: str = field(name="s", default="")

    @property
    def side(self) -> str:
        """The taker's side: the buyer was the maker, so the taker sold."""
        return "sell" if self.buyer_is_maker else "buy"


class Ticker(Struct, frozen=True, tag_field="e", tag="24hrTicker"):
    """One `<symbol>@ticker` event: the rolling 24 h window, once a second."""

    event_time: int = field(name="E")
    symbol: Symbol = field(name="s")
    last: Dec = field(name="c")
    change: SignedDec = field(name="p")
    change_percent: SignedDec = field(name="P")
    open: Dec = field(name="o")
    high: Dec = field(name="h")
    low: Dec = field(name="l")
    volume: Dec = field(name="v")
    quote_volume: Dec = field(name="q")
    last_trade_id: int = field(name="L")


class Candle(Struct, frozen=True):
    """One kline: the `k` object of a `<symbol>@kline_<interval>` event, or one REST row."""

    open_time: int = field(name="t")
    close_time: int = field(name="T")
    interval: str = field(name="i")
    open: Dec = field(name="o")
    high: Dec = field(name="h")
    low: Dec = field(name="l")
    close: Dec = field(name="c")
    volume: Dec = field(name="v")
    trades: int = field(name="n")
    closed: bool = field(name="x")


class Kline(Struct, frozen=True, tag_field="e", tag="kline"):
    """One `<symbol>@kline_<interval>` event: the candle as it stands (`closed` when final)."""

    event_time: int = field(name="E")
    symbol: Symbol = field(name="s")
    candle: Candle = field(name="k")


class ServerShutdown(Struct, frozen=True, tag_field="e", tag="serverShutdown"):
    """Binance's notice that this connection's server is about to go away."""

    event_time: int = field(name="E")


class Depth(Struct, frozen=True):
    """One `<symbol>@depth<N>[@100ms]` event: the whole top of the book, best first per side.
    Binance sends no event time or symbol with it; the stream name says whose book it is."""

    last_update_id: int = field(name="lastUpdateId")
    bids: list[tuple[Dec, Dec]]
    asks: list[tuple[Dec, Dec]]


Payload = Trade | AggTrade | Ticker | Kline | ServerShutdown | Depth
_Tagged = Trade | AggTrade | Ticker | Kline | ServerShutdown


class Message(Struct, frozen=True):
    """A decoded data message: the stream it came on (None on raw connections) and its payload."""

    stream: str | None
    payload: Payload


class Reply(Struct, frozen=True):
    """The answer to a control message (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ...)."""

    id: int | str | None
    result: Any = None
    error_code: int | None = None
    error_msg: str | None = None


class _Error(Struct):
    code: int = -1
    msg: str = ""


class _Envelope(Struct):
    """Every upstream text frame: a combined-stream wrapper, a control reply, or a raw event."""

    stream: str | None = None
    data: Raw = field(default_factory=Raw)  # empty when absent
    id: int | str | None = None
    result: Raw = field(default_factory=Raw)
    error: _Error | str | None = None
    e: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_tagged: msgspec.json.Decoder[_Tagged] = msgspec.json.Decoder(_Tagged)
_depth = msgspec.json.Decoder(Depth)
_any = msgspec.json.Decoder()
# A kline row's first nine columns, the ones we read; Binance may append more.
_KlineRow = tuple[int, Dec, Dec, Dec, Dec, Dec, int, Dec, int]
_klines = msgspec.json.Decoder(list[list[Any]])
_agg_trades = msgspec.json.Decoder(list[AggTrade])


def parse(raw: str | bytes) -> Message | Reply:
    """Decode one upstream text frame; raise ParseError for anything we cannot trust."""
    try:
        envelope = _envelope.decode(raw)
        if envelope.stream is not None and envelope.data:
            return Message(envelope.stream, _decode_payload(envelope.stream, envelope.data))
        if envelope.e is not None:
            return Message(None, _tagged.decode(raw))
        if envelope.result or envelope.error is not None or envelope.id is not None:
            return _reply(envelope)
    except msgspec.DecodeError as exc:
        raise ParseError(str(exc)) from None
    raise ParseError("neither a stream message, an event nor a reply")


def _decode_payload(stream: str, data: Raw) -> Payload:
    if _DEPTH_STREAM.search(stream):
        return _depth.decode(data)
    return _tagged.decode(data)


def _reply(envelope: _Envelope) -> Reply:
    error = envelope.error
    if isinstance(error, _Error):
        return Reply(envelope.id, None, error.code, error.msg)
    if isinstance(error, str):
        return Reply(envelope.id, None, -1, error)
    result = _any.decode(envelope.result) if envelope.result else None
    return Reply(envelope.id, result)


def parse_klines(raw: bytes, symbol: str, interval: str, fetched_ms: int) -> list[Candle]:
    """REST `/api/v3/klines` rows, as Binance gave them at `fetched_ms`, into candles, oldest
    first; the last may still be forming."""
    try:
        rows = [msgspec.convert(row[:9], _KlineRow) for row in _klines.decode(raw)]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ParseError(f"klines for {symbol}: {exc}") from None
    last = len(rows) - 1
    # Every row but the last is closed (a newer candle exists); the last was closed only if its
    # close time had passed when Binance answered (a cached answer may be seconds old).
    return [
        Candle(t, close_t, interval, o, h, low, c, v, n, i < last or close_t < fetched_ms)
        for i, (t, o, h, low, c, v, close_t, _q, n) in enumerate(rows)
    ]


def parse_agg_trades(raw: bytes, symbol: str) -> list[AggTrade]:
    """REST `/api/v3/aggTrades` into trades of `symbol`, oldest first."""
    try:
        trades = _agg_trades.decode(raw)
    except msgspec.DecodeError as exc:
        raise ParseError(f"aggTrades for {symbol}: {exc}") from None
    return [msgspec.structs.replace(t, symbol=symbol, event_time=t.trade_time) for t in trades]
