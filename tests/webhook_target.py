"""A real HTTP server on loopback to receive webhooks, scripted to fail, hang or succeed.

Each request takes the next behaviour from `script` ("fail": HTTP 500, "hang": no answer at all,
"ok": 204; the last one repeats), and is recorded with its headers and JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: str


@dataclass
class WebhookTarget:
    script: list[str]
    received: list[Received] = field(default_factory=list)
    port: int = 0
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self.handlers.add(current)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split()[1]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            behaviour = self.script[min(len(self.received), len(self.script) - 1)]
            self.received.append(Received(path, headers, json.loads(body or b"{}"), behaviour))
            if behaviour == "hang":
                await asyncio.sleep(3600)
            status = "500 Internal Server Error" if behaviour == "fail" else "204 No Content"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(current)


@contextlib.asynccontextmanager
async def webhook_target(script: list[str], port: int = 0) -> AsyncIterator[WebhookTarget]:
    target = WebhookTarget(script)
    server = await asyncio.start_server(target._handle, "127.0.0.1", port)
    target.port = server.sockets[0].getsockname()[1]
    try:
        yield target
    finally:
        server.close()
        # Hanging handlers are cut: the test is done with them.
        handlers = list(target.handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers)
        await server.wait_closed()
