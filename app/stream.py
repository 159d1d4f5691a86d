"""GET /sse as a plain ASGI app: one viewer's event stream, from the hub to the socket.

This is the hot path. The response head and the first chunk (the snapshot) go out through
ASGI; after that, where uvicorn offers a direct writer (app.direct, on by default), the hub's
flusher writes every later update to the socket itself and this task only waits for the
viewer to leave. Elsewhere (the setting off, another server, a reader that cannot take it) the
loop in `EventStream.serve` sends each update with one `await send(...)`.

It is a raw ASGI app rather than sse-starlette's EventSourceResponse because that response costs,
per connection, four to five tasks and, per send, an anyio cancel scope and a lock (the
benchmark's profile, docs/BENCHMARKS.md, showed them dominating at a thousand viewers). What
they gave us is done once, elsewhere: keepalive comments and the cut-off of stalled readers by
the hub's clock, shutdown by `Hub.drain`. The bytes are still sse-starlette's encoding
(`app.render.sse_event`)."""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.auth import is_owner
from app.config import Settings
from app.direct import DIRECT
from app.errors import InputError
from app.hub import Hub
from app.limits import RETRY_AFTER, ViewerLimits
from app.subscriber import Subscriber, Writer
from app.symbols import SymbolDirectory
from app.topics.key import Topic, parse_request

logger = logging.getLogger(__name__)

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
    (b"x-content-type-options", b"nosniff"),
]


def origin_allowed(settings: Settings, origin: str) -> bool:
    """May a page from `origin` read our streams (`--cors-origins`)?"""
    return "*" in settings.cors_origins or origin in settings.cors_origins


def cors_headers(settings: Settings, origin: str | None) -> list[tuple[bytes, bytes]]:
    """CORS for a stream read by another site's page. Never with credentials: see README."""
    if origin is None or not origin_allowed(settings, origin):
        return []
    if "*" in settings.cors_origins:
        return [(b"access-control-allow-origin", b"*")]
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]


class EventStream:
    """The ASGI app behind GET /sse?topics=price:A,book:A and GET /sse?symbols=A,B,C."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await _refuse(
                405,
                "the event stream is read with GET",
                scope,
                receive,
                send,
                {"Allow": "GET, HEAD"},
            )
        state = scope["state"]
        hub: Hub = state["hub"]
        directory: SymbolDirectory = state["directory"]
        settings: Settings = state["settings"]
        limits: ViewerLimits = state["limits"]
        query = QueryParams(scope["query_string"])
        try:
            topics = parse_request(
                query.get("topics"), query.get("symbols"), directory, settings.max_symbols
            )
        except InputError as exc:
            limits.refused["bad_input"] += 1
            return await _refuse(400, str(exc), scope, receive, send)
        client = scope["client"][0] if scope.get("client") else "unknown"
        refusal = limits.acquire(client)
        if refusal is not None:
            return await _refuse(
                refusal.status,
                refusal.message,
                scope,
                receive,
                send,
                {"Retry-After": str(RETRY_AFTER)},
            )
        try:
            origin = Headers(scope=scope).get("origin")
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _HEADERS + cors_headers(settings, origin),
                }
            )
            # HEAD: the headers, and no endless body. A reader cut off for accepting nothing
            # gets no last chunk either: sending it would wait on that same full socket.
            private = is_owner(HTTPConnection(scope), settings.owner_token)
            portfolio = query.get("portfolio") == "1"
            writer = scope.get("extensions", {}).get(DIRECT) if settings.direct_writes else None
            if scope["method"] == "HEAD" or await self.serve(
                hub, topics, settings, receive, send, private, portfolio, writer
            ):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            limits.release(client)

    @staticmethod
    async def serve(
        hub: Hub,
        topics: tuple[Topic, ...],
        settings: Settings,
        receive: Receive,
        send: Send,
        private: bool = False,
        portfolio: bool = False,
        writer: Writer | None = None,
    ) -> bool:
        """Send the viewer its snapshot, then everything pending each time the hub wakes it,
        until it leaves. With a `writer` (app.direct), the hub writes the updates after the
        snapshot itself, and this task only waits for the disconnect. False if the hub cut it
        off for not reading."""
        sub = hub.subscribe(topics)
        sub.private = private  # the owner's page: fired alerts are pushed to it too
        sub.portfolio = private and portfolio
        sub.owner = asyncio.current_task()
        watcher: asyncio.Task[None] | None = None
        try:
            # The snapshot (status and the current value of each topic), through ASGI and with
            # the reconnect delay on it.
            if not await _send_snapshot(sub, settings, send):
                return True
            if writer is not None and writer.usable():
                sub.stop_by_cancel = True  # the hub ends it by cancelling the wait below
                hub.go_direct(sub, writer)
                while (await receive())["type"] != "http.disconnect":
                    pass
                return True
            watcher = asyncio.create_task(_wait_for_disconnect(receive, sub))
            loop = asyncio.get_running_loop()
            while (chunk := await sub.next_chunk()) is not None:
                sub.sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sub.sending_since = None
                sub.bytes_out += len(chunk)
                del chunk  # not held while waiting for the next
            return True
        except asyncio.CancelledError:
            # Stopped by the hub (shutdown, or its clock cutting off a stalled reader): end the
            # response here (uvicorn then closes the connection) rather than fail the request.
            if not sub.ended_by_hub("a viewer", settings.send_timeout):
                raise
            # No last chunk for a reader cut off, or whose connection is already closing.
            return not sub.cut_off and (writer is None or writer.open())
        finally:
            hub.unsubscribe(sub)
            if watcher is not None:
                watcher.cancel()


async def _send_snapshot(sub: Subscriber, settings: Settings, send: Send) -> bool:
    """The first chunk, through ASGI: the status and the current value of each topic, with the
    reconnect delay. False if the hub closed the subscriber first. (A function of its own so
    that its 10-odd KB are freed when it returns: a direct viewer's task then waits for hours.)"""
    if (chunk := await sub.next_chunk()) is None:
        return False
    body = f"retry: {settings.sse_retry_ms}\r\n".encode() + chunk
    sub.sending_since = asyncio.get_running_loop().time()
    await send({"type": "http.response.body", "body": body, "more_body": True})
    sub.sending_since = None
    sub.bytes_out += len(body)
    return True


async def _wait_for_disconnect(receive: Receive, sub: Subscriber) -> None:
    """The only way to learn that a quiet viewer left: uvicorn's send() just returns then."""
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.close()


async def _refuse(
    status: int,
    message: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str] | None = None,
) -> None:
    response = PlainTextResponse(
        message,
        status_code=status,
        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
    )
    await response(scope, receive, send)
