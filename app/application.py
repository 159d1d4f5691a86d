"""create_app(settings): the Starlette app, with a lifespan that owns everything long-lived.

The lifespan starts, in order, the demo exchange (with `--demo`), the REST client, the symbol
directory and its refresh task, and the hub (which owns the upstream client); it stops them in
reverse. Routes reach
them through the lifespan state, never through globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from app.alerts import Alerts
from app.config import Settings
from app.demo import DemoExchange
from app.hub import Hub
from app.limits import ViewerLimits
from app.metrics import WorkerShare, registry
from app.portfolio import PortfolioFeed
from app.render import Renderer
from app.rest import Rest
from app.routes import not_found, routes, store_down
from app.store import Alert, StoreDown, open_store
from app.stream import EventStream
from app.symbols import SymbolDirectory
from app.webhooks import Deliverer
from app.workers import Worker
from app.ws import PATH as WS_PATH
from app.ws import PriceSocket

logger = logging.getLogger(__name__)

# The first symbol-list fetch holds start-up this long at most; then we start without it.
FIRST_FETCH_TIMEOUT = 5.0


def create_app(settings: Settings, worker: Worker | None = None) -> Starlette:
    """The app; `worker` when it is one of several processes on one port (app.workers)."""
    renderer = Renderer()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            effective = settings
            if settings.demo and not (worker is not None and worker.shared_demo):
                demo = await stack.enter_async_context(DemoExchange())
                # Reachable from outside (the browser tests drive its faults through it).
                app.state.demo_exchange = demo
                effective = settings.replace(upstream=demo.ws_url, rest=demo.rest_url)
                logger.warning(
                    "DEMO mode: prices are simulated by a local exchange at %s", demo.ws_url
                )
            # Off the event loop: opening checks every page of a SQLite file, or connects.
            store = await asyncio.to_thread(open_store, settings.data_dir, settings.database)
            stack.push_async_callback(store.aclose)
            rest = await stack.enter_async_context(Rest(effective))
            directory = SymbolDirectory(effective)
            # A slow answer must not hold start-up: past the timeout the fetch fails (logged,
            # remembered for /healthz) and the refresher tries again soon.
            await directory.refresh(rest, time_limit=FIRST_FETCH_TIMEOUT)
            refresher = asyncio.create_task(directory.run(rest), name="symbol-refresh")
            stack.push_async_callback(_cancel, refresher)
            hub = await stack.enter_async_context(Hub(effective, directory, renderer, rest))
            deliverer = await stack.enter_async_context(Deliverer(store, settings))

            def fired(alert: Alert) -> None:
                hub.tell_owner(
                    alert.id, renderer.fragment("alert", alert=alert, demo=settings.demo)
                )
                deliverer.wake()

            alerts = await stack.enter_async_context(
                Alerts(store, hub, fired, poll=settings.database_poll)
            )
            await stack.enter_async_context(PortfolioFeed(store, directory, hub, renderer))
            limits = ViewerLimits(settings.max_streams_per_client, settings.max_viewers)
            metrics = registry(hub, limits, rest, directory)
            share = None
            if worker is not None:
                share = await stack.enter_async_context(WorkerShare(metrics, worker))
            # Also on app.state, for tests and tools that look inside a running server.
            app.state.hub, app.state.limits, app.state.store = hub, limits, store
            app.state.alerts, app.state.deliverer = alerts, deliverer
            yield {
                "hub": hub,
                "directory": directory,
                "settings": effective,
                "renderer": renderer,
                "limits": limits,
                "metrics": metrics,
                "metrics_share": share,
                "store": store,
                "alerts": alerts,
            }
            # Leaving the stack: alerts, webhooks, hub (viewers, then upstream), refresher,
            # REST, the store, demo exchange.

    return PriceApp(
        routes=routes(settings),
        lifespan=lifespan,
        exception_handlers={HTTPException: not_found, StoreDown: store_down},
    )


class PriceApp(Starlette):
    """Starlette, with GET /sse handed straight to `EventStream` and the WebSocket API to
    `PriceSocket`.

    Every send of an event stream would otherwise pass through two of Starlette's send wrappers
    (error and exception handling, about a tenth of the server's time with 5,000 viewers in the
    benchmark's profile). The streams need neither: they answer their own errors, and they get
    the lifespan state from the scope as every route does.
    """

    stream = EventStream()
    socket = PriceSocket()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, path = scope["type"], scope.get("path", "")
        if kind == "http" and path == "/sse":
            await self.stream(scope, receive, send)
        elif kind == "websocket" and (path == WS_PATH or path.startswith(WS_PATH + "/")):
            await self.socket(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def drain(app: Starlette) -> None:
    """End every open event stream, and give WebSocket clients their close (1001) before
    uvicorn closes what is left: the server is stopping (see app.server)."""
    hub: Hub | None = getattr(app.state, "hub", None)
    if hub is not None:
        hub.drain()
        await hub.clients_gone(hub.settings.shutdown_timeout)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
