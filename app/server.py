"""The uvicorn server, told to end the streams before it waits for connections to close.

uvicorn waits for open connections before it runs the lifespan's shutdown, and an event stream
never closes by itself, so without this every Ctrl-C would wait out the graceful timeout and then
cut the streams mid-chunk. `before_shutdown` (the app's `drain`) ends them cleanly at once, and
lets WebSocket clients get their close (1001, going away) before uvicorn closes the rest (1012).
"""

from __future__ import annotations

import inspect
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from app.config import Settings
from app.direct import HttpProtocol, WebSocketProtocol

# The largest WebSocket frame uvicorn takes at all (it closes with 1009 past it); app.ws refuses
# client messages well below this with a sentence of its own.
WS_MAX_FRAME = 64 * 1024


logger = logging.getLogger(__name__)
# Files a process needs besides its viewers' sockets: listening socket, upstream connections,
# the database, logs, the event loop's own.
SPARE_FILES = 64


def raise_open_files_limit(settings: Settings) -> None:
    """Every viewer is an open socket: take the most open files the system allows this process
    (many systems start processes at 1,024), and say so if that is fewer than `--max-viewers`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft - SPARE_FILES < settings.max_viewers:
        logger.warning(
            "this process may open %d files, so it can hold about %d viewers, fewer than "
            "--max-viewers %d (raise the limit with ulimit -n or LimitNOFILE=)",
            soft,
            soft - SPARE_FILES,
            settings.max_viewers,
        )


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for our app: the same for the command and for tests."""
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Open streams never end by themselves; past this, shutdown cuts them.
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout)),
        "log_config": None,
        # Thousands of viewers may (re)connect at once after a restart; the kernel caps this
        # at net.core.somaxconn.
        "backlog": 4096,
        # WebSocket keepalive: a ping every ws_ping seconds, and a client that has not answered
        # within as long again is dropped.
        "ws_ping_interval": settings.ws_ping,
        "ws_ping_timeout": settings.ws_ping,
        "ws_max_size": WS_MAX_FRAME,
        "ws_per_message_deflate": settings.ws_deflate,
        # The client address (per-client limits, the owner's loopback rule) is the forwarded
        # one only when the proxy is one we trust.
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
    if settings.direct_writes:
        # uvicorn's own protocols, offering the app a direct writer for each stream.
        values["http"], values["ws"] = HttpProtocol, WebSocketProtocol
    values.update(overrides)
    return uvicorn.Config(app, **values)


class Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, before_shutdown: Callable[[], Awaitable[None] | None]
    ) -> None:
        super().__init__(config)
        self.before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drained = self.before_shutdown()
        if inspect.isawaitable(drained):
            await drained
        await super().shutdown(sockets)
