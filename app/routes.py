"""HTTP endpoints: the pages, the one SSE stream per page, fragments, embeds and health.

Every symbol in a request is checked by the symbol directory before the hub hears of it; bad
input gets a 400 with a sentence (an HTML page where a person is looking, plain text where a
program is). The hub and the directory come from the lifespan state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import anyio
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException
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

from app.config import Settings
from app.hub import Hub, Subscriber
from app.render import Renderer, resource_dir
from app.symbols import SymbolDirectory, SymbolError

logger = logging.getLogger(__name__)

# How long GET /fragment waits for a first price of a symbol nobody was watching.
FRAGMENT_WAIT = 3.0
# An SSE viewer whose socket accepts nothing for this long is cut off (a stalled reader).
SSE_SEND_TIMEOUT = 30.0
# At shutdown, how long a stream gets to end by itself before sse-starlette cancels it.
SHUTDOWN_GRACE = 0.5


def _hub(request: Request) -> Hub:
    hub: Hub = request.state.hub
    return hub


def _directory(request: Request) -> SymbolDirectory:
    directory: SymbolDirectory = request.state.directory
    return directory


def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def _renderer(request: Request) -> Renderer:
    renderer: Renderer = request.state.renderer
    return renderer


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _renderer(request).page(
        name, demo=_settings(request).demo, static=lambda path: f"/static/{path}", **context
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error", status, status=status, title=title, message=message)


def _sse_url(symbols: tuple[str, ...]) -> str:
    return "/sse?" + urlencode({"symbols": ",".join(symbols)}, safe=",")


def _board_url(symbols: tuple[str, ...]) -> str:
    return "/?" + urlencode({"symbols": ",".join(symbols)}, safe=",")


async def board(request: Request) -> Response:
    """The watchlist. `?symbols=` picks it; the form's `add` field redirects to the longer list."""
    directory, settings = _directory(request), _settings(request)
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
    hub = _hub(request)
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
        add_value=add if error else "",
        sse_url=_sse_url(symbols),
        status_html=hub.status_html,
    )


async def sse(request: Request) -> Response:
    """One event stream for every symbol of a page: a snapshot at once, then every change."""
    try:
        symbols = _directory(request).check_list(request.query_params.get("symbols"))
    except SymbolError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    hub, settings = _hub(request), _settings(request)
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

    return EventSourceResponse(
        stream(),
        ping=settings.sse_ping,
        send_timeout=SSE_SEND_TIMEOUT,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE,
        data_sender_callable=end_on_shutdown,
    )


async def fragment(request: Request) -> Response:
    try:
        symbol = _directory(request).check(request.path_params["symbol"])
    except SymbolError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    html = await _hub(request).fragment(symbol, wait=FRAGMENT_WAIT)
    return HTMLResponse(html)


async def embed(request: Request) -> Response:
    try:
        symbol = _directory(request).check(request.path_params["symbol"])
    except SymbolError as exc:
        return error_page(request, 400, "Bad symbol", str(exc))
    hub = _hub(request)
    return page(
        request,
        "embed",
        html=await hub.fragment(symbol),
        symbol=symbol,
        sse_url=_sse_url((symbol,)),
        status_html=hub.status_html,
    )


async def healthz(request: Request) -> Response:
    health = _hub(request).health()
    return JSONResponse(health, status_code=503 if health["status"] == "down" else 200)


async def debug(request: Request) -> Response:
    html = _renderer(request).fragment("debug", health=_hub(request).health())
    return HTMLResponse(html)


async def not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if "text/html" in request.headers.get("accept", ""):
        return error_page(
            request, exc.status_code, "Not here", f"There is no page at {request.url.path!r}."
        )
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}", status_code=exc.status_code)


def routes() -> list[Route | Mount]:
    return [
        Route("/", board),
        Route("/sse", sse),
        Route("/fragment/{symbol}", fragment),
        Route("/embed/{symbol}", embed),
        Route("/healthz", healthz),
        Route("/debug", debug),
        Mount("/static", StaticFiles(directory=resource_dir("static")), name="static"),
    ]
