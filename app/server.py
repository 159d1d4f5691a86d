"""The uvicorn server, told to end the event streams before it waits for connections to close.

uvicorn waits for open connections before it runs the lifespan's shutdown, and an event stream
never closes by itself, so without this every Ctrl-C would wait out the graceful timeout and then
cut the streams mid-chunk. `before_shutdown` (the hub's `drain`) ends them cleanly at once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.before_shutdown()
        await super().shutdown(sockets)
