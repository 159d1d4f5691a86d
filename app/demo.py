"""The demo exchange: a local server that speaks Binance's market-data WebSocket and REST protocol.

It owns the wire: one listening port serves the streams (`/ws`, `/ws/<names>`, `/stream`,
`/stream?streams=a/b`, with `timeUnit`) and the REST calls a client makes (exchangeInfo, ping,
time, klines, aggTrades, depth), sends each stream at Binance's cadence (trades as they happen,
tickers every second, klines every 2 s, partial books every 1 s or 100 ms), and enforces
Binance's documented limits: 5 incoming messages a second (close 1008), 1024 streams per
connection (error code 4), error replies for malformed requests, server pings, REST request
weights. The prices, candles and books come from `app.simulation`. `--demo` runs it in-process
for the real upstream client, and the tests drive the same server through its controls
(`trade`, `kline`, `close_candle`, `depth`, `drop_connections`, `refuse_next`, `refuse_rest`,
`stall`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.simulation import INTERVALS, Instrument, Market, now_ms

logger = logging.getLogger(__name__)
# websockets logs every connection and HTTP answer at INFO; that is wire detail, kept apart.
wire_logger = logging.getLogger(__name__ + ".wire")

# Binance's documented limits: incoming messages a second and streams per connection.
MAX_INCOMING_PER_SECOND = 5
MAX_STREAMS = 1024
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# Binance's documented update speeds of partial-book streams, in seconds: `@depth<N>@100ms` and
# `@depth<N>`. A `@kline_1s` stream updates twice as often as the other kline streams (1 s, 2 s).
FAST_DEPTH, SLOW_DEPTH = 0.1, 1.0
# Binance's REST limits: request weight per rolling minute, and each endpoint's weight.
WEIGHT_LIMIT = 6000
WEIGHTS = {
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/aggTrades": 4,
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
}
MAX_REST_LIMIT = 1000  # klines and aggTrades; depth goes to 5000
MAX_DEPTH_LIMIT = 5000

# Stream names Binance accepts. The simulator produces data for the first group; the others
# (diff depth, UTC+8 klines, rolling-window tickers, ...) are accepted, as Binance would, and
# stay quiet.
_INTERVAL = "|".join(INTERVALS)
_SYMBOL = r"(?P<sym>[^@!/A-Z\s]+)"
_SIMULATED = re.compile(
    _SYMBOL + r"@(?P<kind>trade|aggTrade|ticker|miniTicker|bookTicker"
    rf"|kline_(?:{_INTERVAL})|depth(?:5|10|20)(?:@100ms)?)"
)
_KLINE = re.compile(_SYMBOL + rf"@kline_(?P<interval>{_INTERVAL})")
_DEPTH = re.compile(_SYMBOL + r"@depth(?P<levels>5|10|20)(?P<fast>@100ms)?")
_ACCEPTED = re.compile(
    rf"[^@!/A-Z\s]+@(avgPrice|depth(@100ms)?|kline_({_INTERVAL})@\+08:00"
    r"|ticker_(1h|4h|1d)|referencePrice|blockTrade)"
    r"|!miniTicker@arr|!ticker_(1h|4h|1d)@arr"
)
# What a REST parameter may look like, as Binance checks it before anything else.
_REST_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")
_REST_INTEGER = re.compile(r"[0-9]{1,20}")


def valid_stream(name: Any) -> bool:
    return isinstance(name, str) and bool(_SIMULATED.fullmatch(name) or _ACCEPTED.fullmatch(name))


@dataclass
class _Peer:
    """One client connection and what it has asked for."""

    ws: ServerConnection
    combined: bool
    time_factor: int
    streams: set[str] = field(default_factory=set)
    recent: deque[float] = field(default_factory=deque)
    # Frames waiting for this peer's writer task, so the market loop never awaits a socket.
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


@dataclass
class _Refusal:
    status: int
    body: str
    headers: dict[str, str]


class _RestError(Exception):
    """A request Binance would answer with HTTP 400 and `{"code": code, "msg": msg}`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class DemoExchange:
    """A simulated Binance on loopback: `async with DemoExchange() as ex: ex.ws_url, ex.rest_url`.

    Args:
        trades_per_second: simulated trades per subscribed symbol per second; 0 makes the market
            silent except for what the controls send (tests use this for exact control).
        ticker_interval: seconds between 24 h ticker events (Binance: 1).
        kline_interval: seconds between updates of each subscribed kline stream (Binance: 2);
            `@kline_1s` streams update twice as often.
        depth_interval: seconds between partial-book snapshots; None follows Binance (0.1 for
            `@depth<N>@100ms`, 1 for `@depth<N>`), a number sets both.
        ping_interval: seconds between server pings (Binance: 20; pong deadline 60).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        trades_per_second: float = 3.0,
        ticker_interval: float = 1.0,
        kline_interval: float = 2.0,
        depth_interval: float | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 60.0,
        seed: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.trades_per_second = trades_per_second
        self.ticker_interval = ticker_interval
        self.kline_interval, self.depth_interval = kline_interval, depth_interval
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.market = Market(seed)
        self.peers: list[_Peer] = []
        self.control_log: list[tuple[float, dict[str, Any]]] = []
        self.rest_log: list[tuple[str, dict[str, str]]] = []  # every REST request: path, query
        # Seconds every REST answer waits (under the handshake's 10 s `open_timeout`).
        self.rest_delay = 0.0
        self.connection_attempts = 0
        self.stalled = False
        self.failing_subscribes = 0
        self.muted: set[str] = set()
        self.close_codes: list[int | None] = []  # how each finished connection was closed
        self._refusals: deque[_Refusal] = deque()
        self._rest_refusals: deque[_Refusal] = deque()
        self._weights: deque[tuple[float, int]] = deque()  # (monotonic time, weight) per request
        self._due: dict[str, float] = {}  # next send, on the monotonic clock, per timed stream
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> DemoExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
            logger=wire_logger,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._run_market(), name="demo-market")
        logger.info("demo exchange listening on %s", self.ws_url)

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.stop_listening()

    async def stop_listening(self) -> None:
        """Close the port and every connection: clients now get 'connection refused'."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test controls -----------------------------------------------------------------------

    def subscriptions(self) -> set[str]:
        """Every stream some open connection is subscribed to."""
        return set().union(*(p.streams for p in self.peers))

    def publish(self, stream: str, payload: dict[str, Any] | list[Any]) -> int:
        """Send `payload` on `stream` to its subscribers (ignores `stall`); returns how many."""
        sent = 0
        if stream in self.muted:
            return 0
        for peer in list(self.peers):
            if stream in peer.streams:
                self._send(peer, stream, payload)
                sent += 1
        return sent

    def send_raw(self, text: str) -> None:
        """Send a text frame, as it is, to every connection (for malformed-input tests)."""
        for peer in list(self.peers):
            self._send_text(peer, text)

    def trade(
        self, symbol: str, price: str | None = None, maker: bool | None = None
    ) -> dict[str, Any]:
        """Make one trade on `symbol` (at `price`, buyer maker or not, if given) and send it on
        `@trade` and `@aggTrade`; returns the `@trade` payload."""
        return self._trade(symbol, price, maker)[0]

    def agg_trade(
        self, symbol: str, price: str | None = None, maker: bool | None = None
    ) -> dict[str, Any]:
        """The same as `trade`, returning the `@aggTrade` payload."""
        return self._trade(symbol, price, maker)[1]

    def ticker(self, symbol: str) -> dict[str, Any]:
        """Send one 24 h ticker for `symbol` now; returns the payload."""
        payload = self.market.ticker_payload(self.market.instruments[symbol], now_ms())
        self.publish(f"{symbol.lower()}@ticker", payload)
        return payload

    def kline(self, symbol: str, interval: str) -> dict[str, Any]:
        """Send the forming `interval` candle of `symbol` now; returns the kline payload."""
        self._check_interval(interval)
        self._roll(symbol)
        payload = self.market.kline_payload(symbol, interval, now_ms())
        self.publish(f"{symbol.lower()}@kline_{interval}", payload)
        return payload

    def close_candle(self, symbol: str, interval: str) -> dict[str, Any]:
        """Close the forming `interval` candle of `symbol` now, send its final update (`x`
        true) and start the next candle at the previous close; returns the final update."""
        self._check_interval(interval)
        self._roll(symbol)
        done = self.market.close_candle(symbol, interval)
        payload = self.market.kline_payload(symbol, interval, now_ms(), done)
        self.publish(f"{symbol.lower()}@kline_{interval}", payload)
        return payload

    def depth(self, symbol: str) -> dict[str, Any]:
        """Send a fresh book snapshot on every subscribed partial-book stream of `symbol`, each
        with its own number of levels; returns the 20-level snapshot."""
        snapshot = self.market.depth(symbol, 20)
        for stream in sorted(self.subscriptions()):
            if (match := _DEPTH.fullmatch(stream)) and match["sym"] == symbol.lower():
                self._publish_depth(stream, int(match["levels"]), snapshot)
        return snapshot

    async def drop_connections(self, code: int = 1001, reason: str = "") -> None:
        """Close every connection with `code` (1001 is Binance's 24 h cut, 1008 its rate limit)."""
        await asyncio.gather(*(peer.ws.close(code, reason) for peer in list(self.peers)))

    def reset_connections(self) -> None:
        """Abort every connection at the TCP level, with no close frame (a reset mid-stream)."""
        for peer in list(self.peers):
            if peer.ws.transport is not None:
                peer.ws.transport.abort()

    def refuse_next(
        self,
        count: int = 1,
        status: int = 503,
        body: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` handshakes with HTTP `status` instead of upgrading."""
        for _ in range(count):
            self._refusals.append(_Refusal(status, body, headers or {}))

    def refuse_rest(
        self, count: int = 1, status: int = 429, retry_after: int | None = None
    ) -> None:
        """Answer the next `count` REST requests with HTTP `status` and Binance's error body
        for it, with a `Retry-After` header (seconds) if given."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        body = json.dumps(_refusal_body(status, retry_after or 120), separators=(",", ":"))
        for _ in range(count):
            self._rest_refusals.append(_Refusal(status, body, headers))

    def fail_next_subscribes(self, count: int = 1) -> None:
        """Answer the next `count` SUBSCRIBE requests with an error reply (code 2)."""
        self.failing_subscribes += count

    def mute(self, stream: str, on: bool = True) -> None:
        """Silence (or restore) one stream while every other keeps flowing."""
        (self.muted.add if on else self.muted.discard)(stream)

    def stall(self, on: bool = True) -> None:
        """Stop (or resume) all data while connections stay open and pings are answered."""
        self.stalled = on

    def server_shutdown(self) -> None:
        """Send Binance's `serverShutdown` notice to every connection."""
        for peer in list(self.peers):
            self._send(peer, "!serverShutdown", {"e": "serverShutdown", "E": now_ms()})

    # -- HTTP: REST endpoints and refused handshakes -------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.startswith("/api/"):
            query = parse_qs(url.query, keep_blank_values=True)
            params = {key: values[0] for key, values in query.items()}
            self.rest_log.append((url.path, params))
            if self.rest_delay > 0:
                await asyncio.sleep(self.rest_delay)
            return self._rest(url.path, params)
        self.connection_attempts += 1
        if self._refusals:
            refusal = self._refusals.popleft()
            response = conn.respond(
                refusal.status, refusal.body or HTTPStatus(refusal.status).phrase
            )
            for key, value in refusal.headers.items():
                response.headers[key] = value
            return response
        if url.path not in ("/ws", "/stream") and not url.path.startswith("/ws/"):
            return conn.respond(404, "Not found")
        return None

    def _rest(self, path: str, params: dict[str, str]) -> Response:
        headers = {"X-MBX-USED-WEIGHT-1M": str(self._use_weight(_weight(path, params)))}
        if self._rest_refusals:
            refusal = self._rest_refusals.popleft()
            return _json_response(refusal.status, refusal.body, headers | refusal.headers)
        endpoints: dict[str, Callable[[dict[str, str]], Any]] = {
            "/api/v3/exchangeInfo": lambda _: self.market.exchange_info(),
            "/api/v3/ping": lambda _: {},
            "/api/v3/time": lambda _: {"serverTime": now_ms()},
            "/api/v3/klines": self._rest_klines,
            "/api/v3/aggTrades": self._rest_agg_trades,
            "/api/v3/depth": self._rest_depth,
        }
        if path not in endpoints:
            return _json_response(404, {"code": -1, "msg": "Not found."}, headers)
        try:
            document = endpoints[path](params)
        except _RestError as error:
            return _json_response(400, {"code": error.code, "msg": error.msg}, headers)
        return _json_response(200, document, headers)

    def _use_weight(self, weight: int) -> int:
        """Count `weight` and return the weight used in the last minute, as Binance reports it."""
        now = time.monotonic()
        self._weights.append((now, weight))
        while self._weights[0][0] <= now - 60:
            self._weights.popleft()
        return sum(w for _, w in self._weights)

    def _rest_klines(self, params: dict[str, str]) -> list[list[Any]]:
        _required(params, "symbol")
        interval = _required(params, "interval")
        symbol = self._rest_symbol(params)
        if interval not in INTERVALS:
            raise _RestError(-1120, "Invalid interval.")
        limit = _limit(params, 500, MAX_REST_LIMIT)
        start, end = _integer(params, "startTime"), _integer(params, "endTime")
        self._roll(symbol)
        return self.market.klines(symbol, interval, limit, start, end)

    def _rest_agg_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._rest_symbol(params)
        limit = _limit(params, 500, MAX_REST_LIMIT)
        from_id = _integer(params, "fromId")
        start, end = _integer(params, "startTime"), _integer(params, "endTime")
        return self.market.agg_trades(symbol, limit, from_id, start, end)

    def _rest_depth(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self._rest_symbol(params)
        return self.market.depth(symbol, _limit(params, 100, MAX_DEPTH_LIMIT))

    def _rest_symbol(self, params: dict[str, str]) -> str:
        symbol = _required(params, "symbol")
        if not _REST_SYMBOL.fullmatch(symbol):
            raise _RestError(
                -1100,
                "Illegal characters found in parameter 'symbol'; "
                "legal range is '^[A-Z0-9-_.]{1,20}$'.",
            )
        if symbol not in self.market.instruments:
            raise _RestError(-1121, "Invalid symbol.")
        return symbol

    # -- WebSocket ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        query = parse_qs(url.query)
        unit = (query.get("timeUnit") or ["millisecond"])[0].lower()
        peer = _Peer(
            ws, combined=url.path == "/stream", time_factor=1000 if unit == "microsecond" else 1
        )
        names = (query.get("streams") or [""])[0].split("/") if url.path == "/stream" else []
        if url.path.startswith("/ws/"):
            names = url.path[len("/ws/") :].split("/")
        if any(not valid_stream(n) for n in names if n):
            await ws.close(1008, "Illegal format ws or stream")
            return
        peer.streams.update(n for n in names if n)
        self._track(peer.streams)
        self.peers.append(peer)
        writer = asyncio.create_task(self._write(peer), name="demo-writer")
        try:
            async for raw in ws:
                await self._control(peer, raw)
        except ConnectionClosed:
            pass
        finally:
            self.peers.remove(peer)
            self.close_codes.append(ws.close_code)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    @staticmethod
    async def _write(peer: _Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await peer.ws.send(await peer.outbox.get())

    async def _control(self, peer: _Peer, raw: str | bytes) -> None:
        now = time.monotonic()
        peer.recent.append(now)
        while peer.recent and now - peer.recent[0] > 1.0:
            peer.recent.popleft()
        if len(peer.recent) > MAX_INCOMING_PER_SECOND:
            logger.info("demo: closing a connection that sent more than 5 messages a second")
            await peer.ws.close(1008, "Too many requests")
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            self._reply(peer, None, error=(3, "Invalid JSON: expected value at line 1 column 1"))
            return
        if not isinstance(msg, dict):
            self._reply(peer, None, error=(3, "Invalid JSON: expected value at line 1 column 1"))
            return
        self.control_log.append((now, msg))
        rid, method, params = msg.get("id"), msg.get("method"), msg.get("params", [])
        if method is None:
            self._reply(peer, rid, error=(2, "Invalid request: missing field `method`"))
        elif method not in METHODS:
            self._reply(
                peer,
                rid,
                error=(
                    2,
                    f"Invalid request: unknown variant `{method}`, "
                    "expected one of " + ", ".join(f"`{m}`" for m in METHODS),
                ),
            )
        elif not (rid is None or isinstance(rid, int | str)):
            self._reply(
                peer, None, error=(2, "Invalid request: request ID must be an unsigned integer")
            )
        elif method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(valid_stream(p) for p in params):
                self._reply(peer, rid, error=(2, "Invalid request: invalid stream"))
            elif method == "SUBSCRIBE" and self.failing_subscribes > 0:
                self.failing_subscribes -= 1
                self._reply(peer, rid, error=(2, "Invalid request: invalid stream"))
            elif method == "SUBSCRIBE" and len(peer.streams | set(params)) > MAX_STREAMS:
                self._reply(peer, rid, error=(4, "Too many subscriptions"))
            else:
                (peer.streams.update if method == "SUBSCRIBE" else peer.streams.difference_update)(
                    params
                )
                self._track(params)
                self._reply(peer, rid, result=None)
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(peer, rid, result=sorted(peer.streams))
        elif not isinstance(params, list) or not params or params[0] != "combined":
            self._reply(peer, rid, error=(0, "Unknown property"))
        elif method == "GET_PROPERTY":
            self._reply(peer, rid, result=peer.combined)
        elif len(params) != 2 or not isinstance(params[1], bool):
            self._reply(peer, rid, error=(1, "Invalid value type: expected Boolean"))
        else:
            peer.combined = params[1]
            self._reply(peer, rid, result=None)

    def _reply(
        self, peer: _Peer, rid: Any, *, result: Any = None, error: tuple[int, str] | None = None
    ) -> None:
        body = (
            {"error": {"code": error[0], "msg": error[1]}, "id": rid}
            if error
            else {"result": result, "id": rid}
        )
        self._send_text(peer, json.dumps(body, separators=(",", ":")))

    def _send(self, peer: _Peer, stream: str, payload: dict[str, Any] | list[Any]) -> None:
        if peer.time_factor != 1 and isinstance(payload, dict):
            payload = _scale_times(payload, peer.time_factor)
        body = {"stream": stream, "data": payload} if peer.combined else payload
        self._send_text(peer, json.dumps(body, separators=(",", ":")))

    @staticmethod
    def _send_text(peer: _Peer, text: str) -> None:
        peer.outbox.put_nowait(text)

    # -- the simulated market -------------------------------------------------------------------

    async def _run_market(self) -> None:
        """Make trades on subscribed symbols at random, send tickers every `ticker_interval`,
        klines and partial books at their own cadence, and close candles as time passes."""
        step = 0.05
        next_ticker = time.monotonic() + self.ticker_interval
        while True:
            await asyncio.sleep(step)
            if self.stalled or not self.peers:
                continue
            wanted = self.subscriptions()
            symbols = {m.group("sym").upper() for s in wanted if (m := _SIMULATED.fullmatch(s))}
            symbols &= self.market.instruments.keys()
            for symbol in sorted(symbols):
                if self.market.rng.random() < self.trades_per_second * step:
                    self._emit_trade(symbol, wanted)
            if time.monotonic() >= next_ticker:
                next_ticker += self.ticker_interval
                for symbol in sorted(symbols):
                    self._emit_tickers(symbol, wanted)
            for symbol, inst in self.market.instruments.items():
                if inst.candles:
                    self._roll(symbol)
            self._emit_timed(wanted, time.monotonic())

    def _emit_trade(self, symbol: str, wanted: set[str]) -> None:
        inst = self._trade(symbol, None, None)[2]
        if f"{symbol.lower()}@bookTicker" in wanted:
            self.publish(f"{symbol.lower()}@bookTicker", self.market.book_ticker_payload(inst))

    def _emit_tickers(self, symbol: str, wanted: set[str]) -> None:
        inst, event_time, low = self.market.instruments[symbol], now_ms(), symbol.lower()
        if f"{low}@ticker" in wanted:
            self.publish(f"{low}@ticker", self.market.ticker_payload(inst, event_time))
        if f"{low}@miniTicker" in wanted:
            self.publish(f"{low}@miniTicker", self.market.mini_ticker_payload(inst, event_time))

    def _emit_timed(self, wanted: set[str], now: float) -> None:
        """Send each kline and partial-book stream that is due; a new stream's first update
        comes one period after it was first seen, as on Binance."""
        for stream in self._due.keys() - wanted:
            del self._due[stream]
        books: dict[str, dict[str, Any]] = {}  # one snapshot per symbol for all its depth streams
        for stream in sorted(wanted):
            period = self._period(stream)
            if period is None:
                continue
            due = self._due.setdefault(stream, now + period)
            if now < due:
                continue
            # Skip rather than burst when the loop fell behind (a stall, a slow machine).
            self._due[stream] = due + period if due + period > now else now + period
            if (kline := _KLINE.fullmatch(stream)) and (
                symbol := kline["sym"].upper()
            ) in self.market.instruments:
                payload = self.market.kline_payload(symbol, kline["interval"], now_ms())
                self.publish(stream, payload)
            elif (depth := _DEPTH.fullmatch(stream)) and (
                symbol := depth["sym"].upper()
            ) in self.market.instruments:
                if symbol not in books:
                    books[symbol] = self.market.depth(symbol, 20)
                self._publish_depth(stream, int(depth["levels"]), books[symbol])

    def _period(self, stream: str) -> float | None:
        """Seconds between updates of a kline or partial-book stream; None for other streams."""
        if kline := _KLINE.fullmatch(stream):
            return self.kline_interval / (2 if kline["interval"] == "1s" else 1)
        if depth := _DEPTH.fullmatch(stream):
            if self.depth_interval is not None:
                return self.depth_interval
            return FAST_DEPTH if depth["fast"] else SLOW_DEPTH
        return None

    def _trade(
        self, symbol: str, price: str | None, maker: bool | None
    ) -> tuple[dict[str, Any], dict[str, Any], Instrument]:
        self._roll(symbol)  # a trade after a candle's close time belongs to the next candle
        inst = self.market.trade(symbol, price, maker)
        event_time, low = now_ms(), symbol.lower()
        trade = self.market.trade_payload(inst, event_time)
        agg = self.market.agg_trade_payload(inst, event_time)
        self.publish(f"{low}@trade", trade)
        self.publish(f"{low}@aggTrade", agg)
        return trade, agg, inst

    def _roll(self, symbol: str) -> None:
        """Close `symbol`'s candles whose time has passed and send each final update.

        Every path that reads or changes candles rolls them first, so subscribers see every
        close, whichever comes first: the market loop, a control or a REST request."""
        for interval, candles in self.market.instruments[symbol].candles.items():
            closed = candles.roll(now_ms())
            if closed and not self.stalled:
                # Only the candle that was forming has subscribers waiting for its end; any
                # others are empty candles of an idle spell and go straight into the history.
                payload = self.market.kline_payload(symbol, interval, now_ms(), closed[0])
                self.publish(f"{symbol.lower()}@kline_{interval}", payload)

    def _track(self, streams: Iterable[Any]) -> None:
        """Start the candles of newly subscribed kline streams, so trades from now on count."""
        for stream in streams:
            if (match := _KLINE.fullmatch(stream)) and match[
                "sym"
            ].upper() in self.market.instruments:
                self.market.candles(match["sym"].upper(), match["interval"])

    def _publish_depth(self, stream: str, levels: int, snapshot: dict[str, Any]) -> None:
        self.publish(
            stream,
            {
                "lastUpdateId": snapshot["lastUpdateId"],
                "bids": snapshot["bids"][:levels],
                "asks": snapshot["asks"][:levels],
            },
        )

    @staticmethod
    def _check_interval(interval: str) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"unknown kline interval {interval!r}; Binance has {INTERVALS}")


def _json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    """An HTTP response with `document` as JSON (a `str` is sent as it is)."""
    text = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"))
    body = text.encode()
    fields = Headers(
        [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    for key, value in (headers or {}).items():
        fields[key] = value
    return Response(status, HTTPStatus(status).phrase, fields, body)


def _scale_times(payload: dict[str, Any], factor: int) -> dict[str, Any]:
    """`payload` with its time fields in microseconds (`timeUnit=MICROSECOND`)."""
    scaled = {k: v * factor if k in ("E", "T", "O", "C") else v for k, v in payload.items()}
    if isinstance(scaled.get("k"), dict):  # a kline's open and close times
        scaled["k"] = {k: v * factor if k in ("t", "T") else v for k, v in scaled["k"].items()}
    return scaled


def _weight(path: str, params: dict[str, str]) -> int:
    """A request's weight as Binance documents it; a book snapshot weighs more the deeper it is."""
    if path != "/api/v3/depth":
        return WEIGHTS.get(path, 1)
    limit = params.get("limit", "100")
    levels = int(limit) if _REST_INTEGER.fullmatch(limit) else 100
    return 5 if levels <= 100 else 25 if levels <= 500 else 50 if levels <= 1000 else 250


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise _RestError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _integer(params: dict[str, str], name: str) -> int | None:
    """An optional integer parameter: None when absent."""
    value = params.get(name)
    if value is None:
        return None
    if not _REST_INTEGER.fullmatch(value):
        raise _RestError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(value)


def _limit(params: dict[str, str], default: int, most: int) -> int:
    limit = _integer(params, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= most:
        raise _RestError(-1130, "Data sent for parameter 'limit' is not valid.")
    return limit


def _refusal_body(status: int, retry_after: int) -> dict[str, Any]:
    """Binance's error body for a refused REST request."""
    if status == 429:
        msg = (
            f"Too many requests; current limit of IP(127.0.0.1) is {WEIGHT_LIMIT} requests per "
            "minute. Please use the websocket for live updates to avoid bans."
        )
        return {"code": -1003, "msg": msg}
    if status == 418:
        until = now_ms() + retry_after * 1000
        msg = (
            f"Way too many requests; IP(127.0.0.1) banned until {until}. "
            "Please use the websocket for live updates to avoid bans."
        )
        return {"code": -1003, "msg": msg}
    if status == 451:
        msg = (
            "Service unavailable from a restricted location according to 'b. Eligibility' in "
            "https://www.binance.com/en/terms. Please contact customer service if you believe "
            "you received this message in error."
        )
        return {"code": 0, "msg": msg}
    if status >= 500:
        return {"code": -1001, "msg": "Internal error; unable to process your request."}
    return {"code": -1000, "msg": "An unknown error occurred while processing the request."}
