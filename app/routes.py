"""HTTP endpoints: the pages, the one SSE stream per page, fragments, embeds and health.

Every symbol in a request is checked by the symbol directory before the hub hears of it; bad
input gets a 400 with a sentence (an HTML page where a person is looking, plain text where a
program is). The hub and the directory come from the lifespan state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import anyio
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.embeds import builder, embed
from app.hub import Subscriber
from app.limits import RETRY_AFTER
from app.pages import (
    directory_of,
    echo,
    error_page,
    hub_of,
    limits_of,
    page,
    plain_error,
    renderer_of,
    settings_of,
)
from app.render import resource_dir
from app.symbols import SymbolError

logger = logging.getLogger(__name__)

# How long GET /fragment waits for a first price of a symbol nobody was watching.
FRAGMENT_WAIT = 3.0
# An SSE viewer whose socket accepts nothing for this long is cut off (a stalled reader).
SSE_SEND_TIMEOUT = 30.0
# At shutdown, how long a stream gets to end by itself before sse-starlette cancels it.
SHUTDOWN_GRACE = 0.5


def _sse_url(symbols: tuple[str, ...]) -> str:
    return "/sse?" + urlencode({"symbols": ",".join(symbols)}, safe=",")


def _board_url(symbols: tuple[str, ...]) -> str:
    return "/?" + urlencode({"symbols": ",".join(symbols)}, safe=",")


async def board(request: Request) -> Response:
    """The watchlist. `?symbols=` picks it; the form's `add` field redirects to the longer list."""
    directory, settings = directory_of(request), settings_of(request)
    try:
        symbols = directory.check_list(
            request.query_params.get("symbols"), default=settings.symbols
        )
    except SymbolError as exc:
        return error_page(request, 400, "Bad symbol list", str(exc))
    add = request.query_params.get("add")
    error = None
    if add is not None and add.strip():
        try:
            wanted = directory.check_list(",".join((*symbols, add)))
        except SymbolError as exc:
            error = str(exc)
        else:
            return RedirectResponse(_board_url(wanted), status_code=303)
    hub = hub_of(request)
    items = []
    for symbol in symbols:
        others = tuple(s for s in symbols if s != symbol)
        items.append(
            {"symbol": symbol, "html": await hub.fragment(symbol), "remove_url": _board_url(others)}
        )
    return page(
        request,
        "board",
        400 if error else 200,
        symbols=symbols,
        items=items,
        error=error,
        add_value=echo(add, 40) if error else "",
        sse_url=_sse_url(symbols),
        status_html=hub.status_html,
    )


async def sse(request: Request) -> Response:
    """One event stream for every symbol of a page: a snapshot at once, then every change."""
    try:
        symbols = directory_of(request).check_list(request.query_params.get("symbols"))
    except SymbolError as exc:
        return plain_error(400, str(exc))
    hub, settings, limits = hub_of(request), settings_of(request), limits_of(request)
    client = request.client.host if request.client else "unknown"
    refusal = limits.acquire(client)
    if refusal is not None:
        return PlainTextResponse(
            refusal.message, status_code=refusal.status, headers={"Retry-After": str(RETRY_AFTER)}
        )
    shutdown = anyio.Event()
    viewer: list[Subscriber] = []

    async def stream() -> AsyncIterator[bytes]:
        # Subscribe inside the generator: its `finally` is then certain to run and release.
        sub = hub.subscribe(symbols)
        viewer.append(sub)
        try:
            # The first chunk starts with the status event; the browser's reconnect delay rides
            # on it (a block of `retry:` alone would be an empty event to some clients).
            retry = f"retry: {settings.sse_retry_ms}\r\n".encode()
            while (chunk := await sub.next_chunk()) is not None:
                yield retry + chunk
                retry = b""
        finally:
            hub.unsubscribe(sub)

    async def end_on_shutdown() -> None:
        # sse-starlette sets `shutdown` when the server stops; ending the generator ourselves
        # finishes the response cleanly instead of cutting it mid-chunk.
        await shutdown.wait()
        for sub in viewer:
            sub.close()

    return _CountedStream(
        lambda: limits.release(client),
        stream(),
        ping=settings.sse_ping,
        send_timeout=SSE_SEND_TIMEOUT,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE,
        data_sender_callable=end_on_shutdown,
    )


class _CountedStream(EventSourceResponse):
    """An event stream that gives its place back when it ends, however it ends."""

    def __init__(self, on_close: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def fragment(request: Request) -> Response:
    if request.method == "OPTIONS":  # not a CORS preflight (the middleware answers those)
        return Response(status_code=204, headers={"Allow": "GET, HEAD, OPTIONS"})
    try:
        symbol = directory_of(request).check(request.path_params["symbol"])
    except SymbolError as exc:
        return plain_error(400, str(exc))
    html = await hub_of(request).fragment(symbol, wait=FRAGMENT_WAIT)
    return HTMLResponse(html)


async def healthz(request: Request) -> Response:
    health = hub_of(request).health()
    return JSONResponse(health, status_code=503 if health["status"] == "down" else 200)


async def debug(request: Request) -> Response:
    html = renderer_of(request).fragment("debug", health=hub_of(request).health())
    return HTMLResponse(html)


async def not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if "text/html" in request.headers.get("accept", ""):
        return error_page(
            request, exc.status_code, "Not here", f"There is no page at {request.url.path!r}."
        )
    return plain_error(exc.status_code, f"{exc.status_code}: {exc.detail}")


def routes(settings: Settings) -> list[Route | Mount]:
    # Other sites' pages may read the stream and the fragments (the htmx way of embedding).
    # Without credentials: our prices are public and we keep no cookies, so "*" is safe.
    cors = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET"],
            allow_headers=[
                "Last-Event-ID",
                "HX-Request",
                "HX-Current-URL",
                "HX-Target",
                "HX-Trigger",
            ],
            max_age=3600,
        )
    ]
    return [
        Route("/", board),
        Route("/sse", sse, middleware=cors),
        # OPTIONS too: htmx's hx-get sends HX-* headers, so a cross-site fetch is preflighted,
        # and the CORS middleware must see the preflight before the method check refuses it.
        Route("/fragment/{symbol}", fragment, methods=["GET", "OPTIONS"], middleware=cors),
        Route("/embed", builder),
        Route("/embed/{symbols}", embed),
        Route("/healthz", healthz),
        Route("/debug", debug),
        Mount("/static", StaticFiles(directory=resource_dir("static")), name="static"),
    ]
