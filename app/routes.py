"""HTTP endpoints: the pages, fragments, health, and the routing table (/sse is app.stream).

Every symbol and topic in a request is checked by the symbol directory before the hub hears of
it; bad input gets a 400 with a sentence (an HTML page where a person is looking, plain text
where a program is). The hub and the directory come from the lifespan state.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.api import quotes, topic
from app.config import Settings
from app.embeds import builder, embed
from app.errors import InputError
from app.metrics import WorkerShare
from app.owner import alert_api, alerts_api, portfolio_api, signin, signout
from app.owner_pages import alerts_page, delete_alert, portfolio_page
from app.pages import (
    directory_of,
    echo,
    error_page,
    hub_of,
    page,
    plain_error,
    renderer_of,
    settings_of,
)
from app.render import resource_dir
from app.store import Store, StoreDown
from app.topics.key import (
    DEFAULT_INTERVAL,
    SWITCH_INTERVALS,
    Topic,
    check_interval,
    parse_topic,
    price,
)
from app.urls import board_url, builder_url, market_url, sse_url

logger = logging.getLogger(__name__)

# How much of a raw message and of a fragment the debug panel shows (characters).
DEBUG_EXCERPT = 600
# How long GET /fragment waits for first data of a topic nobody was watching.
FRAGMENT_WAIT = 3.0
# Seconds a client is asked to wait after a 503 for an unreachable database: about the store's
# pause between attempts to connect again.
STORE_RETRY_AFTER = 2


async def board(request: Request) -> Response:
    """The watchlist. `?symbols=` picks it; the form's `add` field redirects to the longer list."""
    directory, settings = directory_of(request), settings_of(request)
    try:
        symbols = directory.check_list(
            request.query_params.get("symbols"), default=settings.symbols
        )
    except InputError as exc:
        return error_page(request, 400, "Bad symbol list", str(exc))
    add = request.query_params.get("add")
    error = None
    if add is not None and add.strip():
        try:
            wanted = directory.check_list(",".join((*symbols, add)))
        except InputError as exc:
            error = str(exc)
        else:
            return RedirectResponse(board_url(wanted), status_code=303)
    hub = hub_of(request)
    items = []
    for symbol in symbols:
        others = tuple(s for s in symbols if s != symbol)
        items.append(
            {
                "symbol": symbol,
                "event": price(symbol).event,
                "html": await hub.fragment(price(symbol)),
                "remove_url": board_url(others),
                "market_url": market_url(symbol),
            }
        )
    return page(
        request,
        "board",
        400 if error else 200,
        symbols=symbols,
        items=items,
        error=error,
        add_value=echo(add, 40) if error else "",
        sse_url=sse_url(price(s) for s in symbols),
        embed_url=builder_url(symbols),
        status_html=hub.status_html,
    )


async def market(request: Request) -> Response:
    """One symbol's page: price card, chart, order book and trades, on one event stream."""
    directory = directory_of(request)
    try:
        symbol = directory.check(request.path_params["symbol"])
        interval = check_interval(request.query_params.get("interval") or DEFAULT_INTERVAL)
    except InputError as exc:
        return error_page(request, 400, "Bad market", str(exc))
    topics = {
        "price": price(symbol),
        "chart": Topic("chart", symbol, interval),
        "book": Topic("book", symbol),
        "trades": Topic("trades", symbol),
    }
    hub = hub_of(request)
    panels = {kind: await hub.fragment(topic) for kind, topic in topics.items()}
    info = directory.info(symbol)
    return page(
        request,
        "market",
        symbol=symbol,
        info=info,
        interval=interval,
        intervals=[(iv, market_url(symbol, iv)) for iv in SWITCH_INTERVALS],
        other_interval=None if interval in SWITCH_INTERVALS else interval,
        topics=topics,
        panels=panels,
        sse_url=sse_url(topics.values()),
        board_url=board_url(settings_of(request).symbols),
        embed_url=builder_url([symbol], f"view=chart&interval={interval}"),
        status_html=hub.status_html,
    )


async def fragment(request: Request) -> Response:
    """`/fragment/<TOPIC>` (`book:BTCUSDT`), or `/fragment/<SYMBOL>` for the price card."""
    if request.method == "OPTIONS":  # not a CORS preflight (the middleware answers those)
        return Response(status_code=204, headers={"Allow": "GET, HEAD, OPTIONS"})
    text = request.path_params["topic"]
    directory = directory_of(request)
    try:
        topic = parse_topic(text, directory) if ":" in text else price(directory.check(text))
    except InputError as exc:
        return plain_error(400, str(exc))
    html = await hub_of(request).fragment(topic, wait=FRAGMENT_WAIT)
    return HTMLResponse(html)


async def healthz(request: Request) -> Response:
    # Which process answered: one of several with --workers.
    health = {**hub_of(request).health(), "worker": os.getpid()}
    # Where alerts live, and whether the last use of it worked (never its address: this page
    # is public). Not part of "status": prices are served either way.
    store: Store = request.state.store
    health["database"] = {"kind": store.kind, "reachable": store.reachable}
    return JSONResponse(health, status_code=503 if health["status"] == "down" else 200)


async def metrics(request: Request) -> Response:
    """Prometheus' text format, from this app's registry (app.metrics); with --workers, every
    worker's, labelled by worker."""
    share: WorkerShare | None = request.state.metrics_share
    if share is None:
        body = generate_latest(request.state.metrics)
    else:
        body = await share.merged()
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def debug(request: Request) -> Response:
    hub = hub_of(request)
    html = renderer_of(request).fragment(
        "debug", health=hub.health(), topics=hub.topics_report(), excerpt=DEBUG_EXCERPT
    )
    return HTMLResponse(html)


async def not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if "text/html" in request.headers.get("accept", ""):
        return error_page(
            request, exc.status_code, "Not here", f"There is no page at {request.url.path!r}."
        )
    return plain_error(exc.status_code, f"{exc.status_code}: {exc.detail}")


async def store_down(request: Request, exc: Exception) -> Response:
    """The database cannot be reached: alert and portfolio routes say so (503), and prices,
    which never touch it, carry on. The store connects again on a later request."""
    assert isinstance(exc, StoreDown)
    headers = {"Retry-After": str(STORE_RETRY_AFTER)}
    if "text/html" in request.headers.get("accept", ""):
        response = error_page(request, 503, "Database unreachable", str(exc))
        response.headers.update(headers)
        return response
    return plain_error(503, str(exc), headers)


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
        # GET /sse is app.stream.EventStream, called by app.application.PriceApp directly.
        # OPTIONS too: htmx's hx-get sends HX-* headers, so a cross-site fetch is preflighted,
        # and the CORS middleware must see the preflight before the method check refuses it.
        Route("/fragment/{topic}", fragment, methods=["GET", "OPTIONS"], middleware=cors),
        Route("/market/{symbol}", market),
        Route("/embed", builder),
        Route("/embed/{symbols}", embed),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/v1/quotes", quotes, middleware=cors),
        Route("/api/v1/topics/{topic}", topic, middleware=cors),
        Route("/api/v1/alerts", alerts_api, methods=["GET", "POST"]),
        Route("/api/v1/alerts/{id}", alert_api, methods=["GET", "DELETE"]),
        Route("/api/v1/portfolio", portfolio_api, methods=["GET", "PUT"]),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/alerts", alerts_page, methods=["GET", "POST"]),
        Route("/alerts/{id}/delete", delete_alert, methods=["POST"]),
        Route("/portfolio", portfolio_page, methods=["GET", "POST"]),
        Route("/debug", debug),
        Mount("/static", StaticFiles(directory=resource_dir("static")), name="static"),
    ]
