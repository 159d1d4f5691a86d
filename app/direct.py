"""Writing an update straight to a viewer's socket, beside ASGI: uvicorn's protocols, extended.

Through ASGI every update reaches every viewer as an `await send(...)`: a message dict, a
coroutine and a task switch per viewer, and uvicorn's bookkeeping, around one `transport.write`
of bytes the hub had already encoded. These subclasses of uvicorn's HTTP (httptools) and
WebSocket (websockets sans-I/O) protocols put in each request's ASGI scope, under
`extensions[DIRECT]`, an object that does that write itself, framed exactly as uvicorn frames
it (an HTTP/1.1 chunk; an unmasked WebSocket text frame). The hub's flusher then writes every
ready viewer's bytes in one loop, with no task woken per viewer (docs/BENCHMARKS.md).

Only the stream of updates takes this way. The response head and the first chunk, refusals, the
end of a stream, the WebSocket handshake, answers to pings and closes stay with ASGI. A writer
says when it must not be used (a response without chunks, HEAD, a closing socket, a WebSocket
with compression); the app then keeps to the ordinary ASGI send, as it does when the
setting is off or when uvicorn's internals are not what this module expects (logged once).
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from app.subscriber import Writer

logger = logging.getLogger(__name__)

# The key of our writer in an ASGI scope's `extensions`.
DIRECT = "pricestream.direct"


class ChunkWriter:
    """Chunks of one streamed HTTP response, written as uvicorn's `RequestResponseCycle.send`
    writes them.

    `lost` and `paused` are plain attributes, kept by `HttpProtocol`'s transport callbacks,
    because the hub's flusher reads them for every viewer of every update."""

    __slots__ = ("_cycle", "_transport", "lost", "on_writable", "paused")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._transport = cycle.transport
        self.on_writable: Callable[[], None] | None = None
        self.lost = False
        self.paused = cycle.flow.write_paused
        # Read now what `usable` reads later, so a uvicorn that changed fails here, safely.
        _ = (cycle.response_started, cycle.chunked_encoding, cycle.disconnected)
        _ = cycle.response_complete

    def usable(self) -> bool:
        cycle = self._cycle
        return (
            bool(
                cycle.response_started and cycle.chunked_encoding and cycle.scope["method"] == "GET"
            )
            and self.open()
        )

    def open(self) -> bool:
        cycle = self._cycle
        return not (
            self.lost
            or cycle.disconnected
            or cycle.response_complete
            or self._transport.is_closing()
        )

    def write(self, items: list[bytes]) -> int:
        body = items[0] if len(items) == 1 else b"".join(items)
        self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return len(body)


# Frames kept for reuse: every client of a topic gets the same message in one flush. Small,
# because a client's own replies pass through too (a pong echoes up to 16 KB of its ping).
FRAME_CACHE = 256


@functools.lru_cache(maxsize=FRAME_CACHE)
def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 5.2), as a server sends it.
    Cached: every client of a topic gets the same message, and a `str` keeps its hash."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + payload


class FrameWriter:
    """Text messages to one WebSocket client, written as the frames websockets would send."""

    __slots__ = ("_protocol", "on_writable")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self.on_writable: Callable[[], None] | None = None
        _ = (protocol.close_sent, protocol.disconnected, protocol.writable, protocol.conn.state)
        _ = protocol.conn.extensions

    def usable(self) -> bool:
        # With permessage-deflate every client's frames differ: ASGI's way, then.
        return (
            self._protocol.handshake_complete
            and not self._protocol.conn.extensions
            and (self.open())
        )

    def open(self) -> bool:
        protocol = self._protocol
        return (
            not (protocol.close_sent or protocol.disconnected)
            and protocol.conn.state is State.OPEN
            and not protocol.transport.is_closing()
        )

    @property
    def lost(self) -> bool:
        # A close under way is as good as lost: only ASGI may send the closing frames.
        return not self.open()

    @property
    def paused(self) -> bool:
        return not self._protocol.writable.is_set()

    def write(self, items: list[str]) -> int:
        self._protocol.transport.write(b"".join([text_frame(text) for text in items]))
        return sum(len(text) for text in items)  # as the ASGI path counts: the messages


def offer(scope: dict[str, Any], make: Callable[[], Writer]) -> Writer | None:
    """Put a writer in the scope's extensions, unless this uvicorn is not the one we know."""
    try:
        writer = make()
    except AttributeError:
        _warn_once()
        return None
    scope.setdefault("extensions", {})[DIRECT] = writer
    return writer


@functools.cache
def _warn_once() -> None:
    logger.warning(
        "direct writes are off: this uvicorn's protocol internals are not the ones expected; "
        "every update goes through ASGI"
    )


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering each request a `ChunkWriter`, and telling it
    of its connection's state as the transport tells the protocol."""

    writer: ChunkWriter | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        writer = offer(cycle.scope, lambda: ChunkWriter(cycle))  # type: ignore[arg-type]
        self.writer = writer if isinstance(writer, ChunkWriter) else None
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        # Told to the writer itself: uvicorn tells the cycle being read, which is not the
        # stream's when a request is pipelined behind it.
        writer = self.writer
        super().connection_lost(exc)
        if writer is not None:
            writer.lost = True
            if writer.on_writable is not None:
                writer.on_writable()  # the hub's next round ends its stream, news or not

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.writer is not None:
            self.writer.paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        writer = self.writer
        if writer is not None:
            writer.paused = False
            if writer.on_writable is not None:
                writer.on_writable()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets sans-I/O protocol, offering each connection a `FrameWriter`."""

    writer: Writer | None = None

    async def run_asgi(self) -> None:
        self.writer = offer(self.scope, lambda: FrameWriter(self))  # type: ignore[arg-type]
        await super().run_asgi()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.writer is not None and self.writer.on_writable is not None:
            self.writer.on_writable()
