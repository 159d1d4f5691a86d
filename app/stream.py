"""GET /sse as a plain ASGI app: one viewer's event stream, from the hub to the socket.

This is the hot path: every update reaches every viewer through the loop in `EventStream.serve`.
It is a raw ASGI app rather than sse-starlette's EventSourceResponse because that response costs,
per connection, four to five tasks and, per send, an anyio cancel scope and a lock (the
benchmark's profile, docs/BENCHMARKS.md, showed them dominating at a thousand viewers). What
they gave us is done once, elsewhere: keepalive comments and the cut-off of stalled readers by
the hub's clock, shutdown by `Hub.drain`. Per connection there are two tasks, the one uvicorn
runs this in and one that waits for the disconnect; per send, one `await send(...)`. The bytes
are still sse-starlette's encoding (`app.render.sse_event`).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.auth import is_owner
from app.config import Settings
from app.errors import InputError
from app.hub import Hub, Subscriber
from app.limits import RETRY_AFTER, ViewerLimits
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
            if scope["method"] == "HEAD" or await self.serve(
                hub, topics, settings, receive, send, private, portfolio
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
    ) -> bool:
        """Send the viewer everything pending, each time the hub wakes it, until it leaves.
        False if the hub cut it off for not reading."""
        sub = hub.subscribe(topics)
        sub.private = private  # the owner's page: fired alerts are pushed to it too
        sub.portfolio = private and portfolio
        sub.owner = asyncio.current_task()
        watcher = asyncio.create_task(_wait_for_disconnect(receive, sub))
        try:
            # The reconnect delay rides on the first chunk (the snapshot).
            first = f"retry: {settings.sse_retry_ms}\r\n".encode()
            while (chunk := await sub.next_chunk()) is not None:
                sub.sending_since = asyncio.get_running_loop().time()
                body = first + chunk if first else chunk  # no copy once the snapshot is out
                await send({"type": "http.response.body", "body": body, "more_body": True})
                sub.sending_since = None
                sub.bytes_out += len(body)
                first = b""
            return True
        except asyncio.CancelledError:
            # Cut off by the hub's clock: end the response here (uvicorn then closes the
            # connection) rather than fail the request.
            if not sub.was_cut_off("a viewer", settings.send_timeout):
                raise
            return False
        finally:
            hub.unsubscribe(sub)
            watcher.cancel()


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
