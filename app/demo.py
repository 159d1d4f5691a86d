"""The demo exchange: a local server that speaks Binance's market-stream wire protocol.

`--demo` runs it in-process and points the real upstream client at it, and the tests drive the same
server through its controls (`publish`, `drop_connections`, `refuse_next`, `stall`, ...). One
listening port serves both the WebSocket streams (`/ws`, `/ws/<names>`, `/stream`,
`/stream?streams=a/b`, with `timeUnit`) and the REST calls a client makes (`/api/v3/exchangeInfo`,
`/api/v3/ping`, `/api/v3/time`). It enforces Binance's rules as documented in
shared/binance-streams.md: 5 incoming messages a second (close 1008), 1024 streams per connection
(error code 4), error replies for malformed requests, and server pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.simulation import Market, now_ms

logger = logging.getLogger(__name__)
# websockets logs every connection and HTTP answer at INFO; that is wire detail, kept apart.
wire_logger = logging.getLogger(__name__ + ".wire")

# Binance's documented limits (shared/binance-streams.md 3.1, 3.2).
MAX_INCOMING_PER_SECOND = 5
MAX_STREAMS = 1024
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

# Stream names Binance accepts (section 1.3). The simulator produces data for the first group;
# the others are accepted, as Binance would, and stay quiet.
_SIMULATED = re.compile(
    r"(?P<sym>[^@!/A-Z\s]+)@(?P<kind>trade|aggTrade|ticker|miniTicker|bookTicker)"
)
_ACCEPTED = re.compile(
    r"[^@!/A-Z\s]+@(avgPrice|depth(5|10|20)?(@100ms)?|kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h"
    r"|12h|1d|3d|1w|1M)(@\+08:00)?|ticker_(1h|4h|1d)|referencePrice|blockTrade)"
    r"|!miniTicker@arr|!ticker_(1h|4h|1d)@arr"
)


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


class DemoExchange:
    """A simulated Binance on loopback: `async with DemoExchange() as ex: ex.ws_url, ex.rest_url`.

    Args:
        trades_per_second: simulated trades per subscribed symbol per second; 0 makes the market
            silent except for what `publish` sends (tests use this for exact control).
        ticker_interval: seconds between 24 h ticker events (Binance: 1).
        ping_interval: seconds between server pings (Binance: 20; pong deadline 60).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        trades_per_second: float = 3.0,
        ticker_interval: float = 1.0,
        ping_interval: float = 20.0,
        ping_timeout: float = 60.0,
        seed: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.trades_per_second = trades_per_second
        self.ticker_interval = ticker_interval
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.market = Market(seed)
        self.peers: list[_Peer] = []
        self.control_log: list[tuple[float, dict[str, Any]]] = []
        self.connection_attempts = 0
        self.stalled = False
        self.failing_subscribes = 0
        self.muted: set[str] = set()
        self.close_codes: list[int | None] = []  # how each finished connection was closed
        self._refusals: deque[_Refusal] = deque()
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

    def trade(self, symbol: str, price: str | None = None) -> dict[str, Any]:
        """Make one trade on `symbol` (at `price` if given) and send it; returns the payload."""
        inst = self.market.trade(symbol)
        if price is not None:
            inst.price = Decimal(price)
        payload = self.market.trade_payload(inst, now_ms(), maker=False)
        self.publish(f"{symbol.lower()}@trade", payload)
        return payload

    def ticker(self, symbol: str) -> dict[str, Any]:
        """Send one 24 h ticker for `symbol` now; returns the payload."""
        payload = self.market.ticker_payload(self.market.instruments[symbol], now_ms())
        self.publish(f"{symbol.lower()}@ticker", payload)
        return payload

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

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.startswith("/api/"):
            return self._rest(path)
        self.connection_attempts += 1
        if self._refusals:
            refusal = self._refusals.popleft()
            response = conn.respond(
                refusal.status, refusal.body or HTTPStatus(refusal.status).phrase
            )
            for key, value in refusal.headers.items():
                response.headers[key] = value
            return response
        if path not in ("/ws", "/stream") and not path.startswith("/ws/"):
            return conn.respond(404, "Not found")
        return None

    def _rest(self, path: str) -> Response:
        documents: dict[str, Any] = {
            "/api/v3/exchangeInfo": self.market.exchange_info,
            "/api/v3/ping": dict,
            "/api/v3/time": lambda: {"serverTime": now_ms()},
        }
        if path not in documents:
            return _json_response(404, {"code": -1, "msg": "Not found."})
        return _json_response(200, documents[path]())

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
            payload = {
                k: v * peer.time_factor if k in ("E", "T", "O", "C") else v
                for k, v in payload.items()
            }
        body = {"stream": stream, "data": payload} if peer.combined else payload
        self._send_text(peer, json.dumps(body, separators=(",", ":")))

    @staticmethod
    def _send_text(peer: _Peer, text: str) -> None:
        peer.outbox.put_nowait(text)

    # -- the simulated market -------------------------------------------------------------------

    async def _run_market(self) -> None:
        """Make trades on subscribed symbols at random, and tickers every `ticker_interval`."""
        step = 0.05
        next_ticker = time.monotonic() + self.ticker_interval
        for _ in itertools.count():
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

    def _emit_trade(self, symbol: str, wanted: set[str]) -> None:
        inst = self.market.trade(symbol)
        event_time, maker = now_ms(), self.market.rng.random() < 0.5
        low = symbol.lower()
        if f"{low}@trade" in wanted:
            self.publish(f"{low}@trade", self.market.trade_payload(inst, event_time, maker))
        if f"{low}@aggTrade" in wanted:
            self.publish(f"{low}@aggTrade", self.market.agg_trade_payload(inst, event_time, maker))
        if f"{low}@bookTicker" in wanted:
            self.publish(f"{low}@bookTicker", self.market.book_ticker_payload(inst))

    def _emit_tickers(self, symbol: str, wanted: set[str]) -> None:
        inst, event_time, low = self.market.instruments[symbol], now_ms(), symbol.lower()
        if f"{low}@ticker" in wanted:
            self.publish(f"{low}@ticker", self.market.ticker_payload(inst, event_time))
        if f"{low}@miniTicker" in wanted:
            self.publish(f"{low}@miniTicker", self.market.mini_ticker_payload(inst, event_time))


def _json_response(status: int, document: Any) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)
