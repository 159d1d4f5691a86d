"""WebSocket /ws/price and /ws/price/{symbol}: live data as JSON for programs, from the same hub.

A client subscribes and unsubscribes symbols (price topics) or, as our extension, any topic; it
gets the current value of each at once, then every change, encoded once per update for every
client. Like an SSE viewer it holds one latest-value slot per topic, so a slow reader skips to
the newest value and never slows anyone. Answers to its own messages (subscribed, pong, error)
are never conflated: they queue, a bounded few, ahead of the data. Bad input gets an `error`
message naming the bad part and the connection stays; floods, oversized and binary frames close
it (1008, 1009). The server pings idle clients at the WebSocket level (uvicorn, `--ws-ping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app.config import Settings
from app.direct import DIRECT
from app.errors import InputError
from app.hub import Hub
from app.limits import RETRY_AFTER, ViewerLimits
from app.stream import origin_allowed
from app.subscriber import Subscriber, Writer
from app.symbols import SymbolDirectory
from app.topics.key import Topic, parse_topic, price

logger = logging.getLogger(__name__)

PATH = "/ws/price"
# A client message is a few symbols of JSON; anything much bigger is not one.
MAX_MESSAGE_BYTES = 16 * 1024
# Client messages a second before we close with 1008 (a page subscribing as its user clicks
# sends a handful; a loop that forgot to sleep sends thousands).
MAX_MESSAGES_PER_SECOND = 20
# Answers not yet sent before we stop answering: a client that sends but never reads.
MAX_REPLIES = 64
_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


class _Close(Exception):
    """The client broke a rule that ends the connection; code and sentence for the close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PriceSocket:
    """The ASGI app behind /ws/price and /ws/price/{symbol}."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        hub: Hub = state["hub"]
        directory: SymbolDirectory = state["directory"]
        settings: Settings = state["settings"]
        limits: ViewerLimits = state["limits"]
        websocket = WebSocket(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        # Browsers send Origin; our own pages come from where the socket is (same host).
        same_site = origin is not None and urlsplit(origin).netloc == headers.get("host")
        if origin is not None and not same_site and not origin_allowed(settings, origin):
            limits.refused["origin"] += 1
            return await _deny(websocket, 403, f"origin {origin[:100]!r} may not open this socket")
        first: Topic | None = None
        rest = scope["path"][len(PATH) :].strip("/")
        if rest:
            try:
                first = price(directory.check(rest))
            except InputError as exc:
                limits.refused["bad_input"] += 1
                return await _deny(websocket, 400, str(exc))
        client = scope["client"][0] if scope.get("client") else "unknown"
        refusal = limits.acquire(client)
        if refusal is not None:
            return await _deny(
                websocket, refusal.status, refusal.message, {"Retry-After": str(RETRY_AFTER)}
            )
        try:
            await websocket.accept()
            session = _Session(websocket, send, hub, directory, settings)
            writer = scope.get("extensions", {}).get(DIRECT) if settings.direct_writes else None
            await session.run(first, writer)
        finally:
            limits.release(client)


async def _deny(
    websocket: WebSocket, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Refuse the handshake with an HTTP answer a client can read (uvicorn supports it)."""
    response = PlainTextResponse(
        message,
        status_code=status,
        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
    )
    await websocket.send_denial_response(response)


class _Session:
    """One accepted client: a reader of its messages and a writer of everything it gets."""

    def __init__(
        self,
        websocket: WebSocket,
        send: Send,
        hub: Hub,
        directory: SymbolDirectory,
        settings: Settings,
    ) -> None:
        self.websocket = websocket
        # Sends go straight to the server (as /sse's do): Starlette's WebSocket.send adds a
        # state check per message, which the benchmark's profile showed at about 7 %.
        self.send = send
        self.hub = hub
        self.directory = directory
        self.settings = settings
        self.sub: Subscriber = hub.subscribe((), transport="ws")
        self.received: deque[float] = deque()
        self.closing: _Close | None = None  # why we close, when the client broke a rule
        self.disconnected = False

    async def run(self, first: Topic | None, writer: Writer | None = None) -> None:
        """Serve the client until it leaves, breaks a rule or the server stops. With a
        `writer` (app.direct) the hub writes its messages itself, and this task only waits."""
        sub = self.sub
        sub.owner = asyncio.current_task()
        if writer is not None and writer.usable():
            self.hub.go_direct(sub, writer)
        if first is not None:
            self.hub.add_topics(sub, [first])
            self._subscribed()
        reader = asyncio.create_task(self._read(), name="ws-reader")
        try:
            await (sub.closing() if sub.direct is not None else self._write())
        except asyncio.CancelledError:
            if not sub.ended_by_hub("a WebSocket client", self.settings.send_timeout):
                raise
            return
        except OSError:
            # The client left while we were sending (uvicorn's ClientDisconnected): nothing
            # to close, nothing to report; the reader has seen or will see the disconnect.
            self.disconnected = True
        finally:
            reader.cancel()
            try:
                await asyncio.wait([reader])
            finally:
                # Even if a cancellation lands in that wait: the client must not stay counted
                # (nor its topics held). And no await between this and our close frame below,
                # or shutdown would see no clients left and close with 1012 first.
                self.hub.unsubscribe(sub)
        if self.disconnected:
            return
        code, reason = (
            (self.closing.code, self.closing.reason)
            if self.closing is not None
            else (1001, "the server is going away")
        )
        with contextlib.suppress(OSError):  # it may have left in the meantime
            await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def _write(self) -> None:
        """Send the client what is pending, each time the hub wakes it, until it is closed."""
        sub, send = self.sub, self.send
        loop = asyncio.get_running_loop()
        while (batch := await sub.next_batch()) is not None:
            sub.sending_since = loop.time()
            for text in batch:
                await send({"type": "websocket.send", "text": text})
                sub.bytes_out += len(text)  # characters: the JSON is ASCII but for symbols
            sub.sending_since = None

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    self.disconnected = True
                    break
                self._handle(message)
        except _Close as close:
            self.closing = close
            logger.info("ws: closing a client with %d: %s", close.code, close.reason)
        finally:
            self.sub.close()

    # -- the protocol -----------------------------------------------------------------------

    def _handle(self, message: Mapping[str, Any]) -> None:
        if message.get("bytes") is not None:
            raise _Close(1008, "binary frames are not accepted: send JSON text")
        text = message.get("text") or ""
        if len(text) > MAX_MESSAGE_BYTES:
            raise _Close(1009, f"message over {MAX_MESSAGE_BYTES} bytes")
        now = time.monotonic()
        self.received.append(now)
        while now - self.received[0] > 1.0:
            self.received.popleft()
        if len(self.received) > MAX_MESSAGES_PER_SECOND:
            raise _Close(1008, f"more than {MAX_MESSAGES_PER_SECOND} messages a second")
        if len(self.sub.replies) >= MAX_REPLIES:
            raise _Close(1008, f"more than {MAX_REPLIES} messages left unread")
        try:
            request = _decode.decode(text)
        except msgspec.DecodeError:
            return self._error("invalid-json", f"not JSON: {text[:60]!r}")
        if not isinstance(request, dict):
            return self._error(
                "not-an-object", 'send a JSON object, like {"type": "subscribe", "symbols": [...]}'
            )
        kind = request.get("type")
        if kind == "ping":
            return self._reply({**request, "type": "pong"})
        if kind not in ("subscribe", "unsubscribe"):
            return self._error(
                "unknown-type",
                f"unknown type {str(kind)[:40]!r}: use subscribe, unsubscribe or ping",
            )
        topics = self._topics(request)
        if topics is None:
            return
        if kind == "subscribe":
            limit = self.settings.max_symbols
            if len(set(self.sub.topics) | set(topics)) > limit:
                return self._error(
                    "too-many-symbols", f"at most {limit} symbols or topics per connection"
                )
            self.hub.add_topics(self.sub, topics)
            self._subscribed()
        else:
            self.hub.remove_topics(self.sub, topics)
            self._reply(
                {"type": "unsubscribed", "symbols": self._symbols(), "topics": self._names()}
            )

    def _topics(self, request: dict[str, Any]) -> list[Topic] | None:
        """The valid topics a (un)subscribe names; an error for each bad one, None if none
        could even be read."""
        symbols, names = request.get("symbols"), request.get("topics")
        if symbols is None and names is None:
            self._error("missing-symbols", 'name them: {"symbols": ["BTCUSDT"]}')
            return None
        wanted: list[str] = []
        for field, value in (("symbols", symbols), ("topics", names)):
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self._error("bad-symbols", f"{field} must be a list of strings")
                return None
            if len(value) > self.settings.max_symbols:
                self._error(
                    "too-many-symbols",
                    f"{len(value)} {field}: at most {self.settings.max_symbols} at once",
                )
                return None
            wanted += [f"price:{v}" if field == "symbols" else v for v in value]
        topics = []
        for text in wanted:
            try:
                topics.append(parse_topic(text, self.directory))
            except InputError as exc:
                self._error("bad-symbol", str(exc))
        return list(dict.fromkeys(topics))

    def _symbols(self) -> list[str]:
        return [t.symbol for t in self.sub.topics if t.kind == "price"]

    def _names(self) -> list[str]:
        return [t.name for t in self.sub.topics]

    def _subscribed(self) -> None:
        self._reply({"type": "subscribed", "symbols": self._symbols(), "topics": self._names()})

    def _error(self, code: str, message: str) -> None:
        self._reply({"type": "error", "code": code, "message": message})

    def _reply(self, message: dict[str, Any]) -> None:
        self.sub.reply(_encode.encode(message).decode())
