"""Two servers behind Debian's nginx, running deploy/nginx/pricestream.conf: streams pass at once,
WebSockets upgrade, a killed server's viewers move to the other, and the client address the
servers see (per-client limits, the owner's loopback rule) is the real one, never a forged one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.typing import Origin

from app.config import Settings
from app.demo import DemoExchange
from tests.conftest import WAIT, EventReader, eventually, root
from tests.nginx import TEMPLATE, Nginx, behind_nginx, client
from tests.system import free_port

pytestmark = pytest.mark.anyio
# A single update must cross nginx within this many seconds (the server sends it at once).
PROMPT = 1.0
# Client addresses on loopback that are not nginx's (127.0.0.1), so the servers do not trust them.
VISITOR, OTHER_VISITOR, DIRECT_PEER = "127.0.0.5", "127.0.0.6", "127.0.0.3"
FORGED = "203.0.113.9"


def _block(text: str, header: str) -> str:
    """The body of the block `header { ... }`, up to the brace closing it (as indented)."""
    match = re.search(rf"^( *){re.escape(header)} \{{\n(.*?)^\1\}}", text, re.S | re.M)
    assert match, f"no `{header}` block"
    return match.group(2)


def _directive(block: str, name: str) -> str:
    values: list[str] = re.findall(rf"^\s*{name} ([^;]*);", block, re.M)
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    number, unit = match.groups()
    return float(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


async def test_the_configuration_is_accepted_and_keeps_streams_unbuffered_and_alive() -> None:
    # What the product's own headers cannot guarantee, the configuration must: the server asks
    # nginx not to buffer (X-Accel-Buffering) only on /sse, and it cannot lengthen nginx's
    # timeouts. Each stream's read timeout outlasts three keepalives.
    text = TEMPLATE.read_text()
    defaults = Settings()
    streams = (("location = /sse", defaults.sse_ping), ("location /ws/", defaults.ws_ping))
    for location, keepalive in streams:
        block = _block(text, location)
        assert _directive(block, "proxy_buffering") == "off"
        for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
            assert _seconds(_directive(block, timeout)) >= 3 * keepalive, (location, timeout)
    # A location with a proxy_set_header of its own would inherit none of the server's.
    for location in re.findall(r"^ +(location [^{]*) \{", text, re.M):
        assert "proxy_set_header" not in _block(text, location), location
    server = _block(text, "server")
    assert _directive(server, "proxy_http_version") == "1.1"
    headers = dict(
        line.split(" ", 1) for line in re.findall(r"^\s*proxy_set_header ([^;]*);", server, re.M)
    )
    assert headers["X-Forwarded-For"] == "$remote_addr"  # set, never appended to
    assert headers["Connection"] == "$pricestream_connection"
    assert _directive(_block(text, "upstream pricestream"), "keepalive") == "32"
    # And Debian's nginx accepts every directive of it.
    with tempfile.TemporaryDirectory(prefix="pricestream-nginx-") as folder:
        nginx = await Nginx.make(Path(folder))
        nginx.write([free_port(), free_port()])
        await nginx.check()


async def test_an_sse_stream_through_nginx_gets_each_update_at_once(
    exchange: DemoExchange,
) -> None:
    async with (
        behind_nginx(exchange) as cluster,
        client(VISITOR, base_url=cluster.url) as http,
        _sse(http, "/sse?symbols=BTCUSDT") as (response, events),
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers  # Debian's gzip left it alone
        first = await events.next()
        assert first.retry == 2000  # the server's reconnect delay reaches the browser
        await events.until(lambda e: e.event == "price-BTCUSDT")
        await eventually(lambda: "btcusdt@trade" in exchange.subscriptions())
        for price in ("67000.5", "67001.25", "66999.75"):
            started = time.monotonic()
            sent = exchange.trade("BTCUSDT", price=price)["p"]
            await events.until(lambda e: _price(e) == sent, PROMPT)  # noqa: B023 (awaited here)
            assert time.monotonic() - started < PROMPT


async def test_a_websocket_through_nginx_subscribes_and_gets_live_prices(
    exchange: DemoExchange,
) -> None:
    # Only our own pages may open the socket from a browser: nginx must pass the Host (with its
    # port) that the page's Origin names.
    flags = ("--cors-origins", "https://embeds.example")
    async with behind_nginx(exchange, flags=flags) as cluster:
        ws_url = cluster.url.replace("http://", "ws://") + "/ws/price"
        async with connect(ws_url, origin=Origin(cluster.url), open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"type": "subscribe", "symbols": ["ETHUSDT"]}))
            subscribed = await _receive(ws, lambda m: m["type"] == "subscribed")
            assert subscribed["symbols"] == ["ETHUSDT"]
            await _receive(ws, lambda m: m["type"] == "price")
            await eventually(lambda: "ethusdt@trade" in exchange.subscriptions())
            started = time.monotonic()
            trade = exchange.trade("ETHUSDT", price="3500.5")
            await _receive(ws, lambda m: m["type"] == "price" and m["price"] == trade["p"], PROMPT)
            assert time.monotonic() - started < PROMPT
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            assert (await _receive(ws, lambda m: m["type"] == "pong"))["id"] == 7


async def test_killing_the_server_a_stream_is_on_moves_the_stream_to_the_other(
    exchange: DemoExchange,
) -> None:
    async with (
        behind_nginx(exchange) as cluster,
        client(VISITOR, base_url=cluster.url) as http,
        client(OTHER_VISITOR, base_url=cluster.url) as other_http,
    ):
        async with _sse(http, "/sse?symbols=BTCUSDT") as (_, events):
            retry = (await events.next()).retry
            assert retry == 2000
            doomed = await cluster.server_with_viewers(1)
            # A second viewer: nginx sends it to the server with the fewest connections.
            async with _sse(other_http, "/sse?symbols=BTCUSDT") as (_, bystander):
                await bystander.until(lambda e: e.event == "price-BTCUSDT")
                survivor = next(s for s in cluster.servers if s is not doomed)
                await eventually(lambda: _subscribed_servers(exchange, "btcusdt@trade") == 2)
                assert await survivor.viewers() == 1

                await doomed.kill()
                with pytest.raises(httpx.TransportError):  # nginx cuts the stream off
                    await events.until(lambda e: False)
                dropped = time.monotonic()
                await eventually(lambda: _subscribed_servers(exchange, "btcusdt@trade") == 1)
                # The client waits what the server told it, then reconnects through nginx, which
                # passes over the dead server without the client seeing an error.
                await asyncio.sleep(retry / 1000)
                async with _sse(http, "/sse?symbols=BTCUSDT") as (response, moved):
                    assert response.status_code == 200
                    await moved.until(lambda e: e.event == "price-BTCUSDT")
                    assert await survivor.viewers() == 2
                    trade = exchange.trade("BTCUSDT", price="70123.5")
                    await moved.until(lambda e: _price(e) == trade["p"], PROMPT)
                    assert time.monotonic() - dropped < retry / 1000 + 3
                    # The other server's viewer noticed nothing: same stream, the same trade.
                    await bystander.until(lambda e: _price(e) == trade["p"], PROMPT)
                # Everything else keeps being answered, by the server that is left.
                for _ in range(5):
                    assert (await http.get("/healthz")).status_code == 200
        # What nginx saw: the stream cut, and the dead server refusing the reconnect.
        errors = cluster.nginx.errors()
        assert "upstream prematurely closed connection" in errors, errors
        assert "Connection refused" in errors, errors


async def test_the_per_client_limit_counts_the_real_client_address(
    exchange: DemoExchange,
) -> None:
    flags = ("--max-streams-per-client", "1")
    async with (
        behind_nginx(exchange, flags=flags) as cluster,
        client(VISITOR, base_url=cluster.url) as visitor,
        client(OTHER_VISITOR, base_url=cluster.url) as other,
    ):
        # One visitor, a different forged X-Forwarded-For each time: nginx replaces it with the
        # visitor's own address, so each server counts them as one client, one stream each.
        statuses = []
        async with _streams() as open_stream:
            for n in range(3):
                statuses.append(await open_stream(visitor, forged=f"198.51.100.{n}"))
            assert statuses == [200, 200, 429]
            # Another visitor is not nginx's address either: it has its own count.
            assert await open_stream(other, forged=VISITOR) == 200
        # A client that reaches a server directly cannot forge its address at all.
        server = cluster.servers[0]
        async with client(DIRECT_PEER, base_url=server.url) as direct, _streams() as open_stream:
            assert await open_stream(direct, forged="198.51.100.7") == 200
            assert await open_stream(direct, forged="198.51.100.8") == 429


async def test_the_owner_loopback_rule_sees_the_client_through_nginx(
    exchange: DemoExchange,
) -> None:
    # No --owner-token: alerts answer loopback clients only.
    async with behind_nginx(exchange, servers=1) as cluster:
        server = cluster.servers[0]
        async with client("127.0.0.1", base_url=cluster.url) as local:
            assert (await local.get("/api/v1/alerts")).status_code == 200
            # nginx replaces what the client claims with what it saw: still loopback.
            forged = await local.get("/api/v1/alerts", headers={"X-Forwarded-For": FORGED})
            assert forged.status_code == 200
            # A write from our own page, through nginx: its Origin matches the Host nginx passes.
            alert = {"symbol": "BTCUSDT", "condition": "above", "price": "1"}
            made = await local.post("/api/v1/alerts", json=alert, headers={"Origin": cluster.url})
            assert made.status_code == 201, made.text
        async with client(VISITOR, base_url=cluster.url) as other_loopback:
            assert (await other_loopback.get("/api/v1/alerts")).status_code == 200
        # Had nginx passed the header on, the server would have believed it: it trusts nginx's
        # address, and from there a remote client is refused.
        async with client("127.0.0.1", base_url=server.url) as from_nginx_address:
            remote = await from_nginx_address.get(
                "/api/v1/alerts", headers={"X-Forwarded-For": FORGED}
            )
            assert remote.status_code == 401
        # From any other peer the header counts for nothing: its own address is what counts.
        async with client(DIRECT_PEER, base_url=server.url) as direct:
            ignored = await direct.get("/api/v1/alerts", headers={"X-Forwarded-For": FORGED})
            assert ignored.status_code == 200


# -- helpers ---------------------------------------------------------------------------------


def _price(event: Any) -> str | None:
    if event.event != "price-BTCUSDT":
        return None
    return root(event.data).attrs.get("data-price")


def _subscribed_servers(exchange: DemoExchange, stream: str) -> int:
    return sum(stream in peer.streams for peer in exchange.peers)


@contextlib.asynccontextmanager
async def _sse(
    http: httpx.AsyncClient, path: str
) -> AsyncIterator[tuple[httpx.Response, EventReader]]:
    """An SSE stream opened through `http` (whose timeout bounds the opening): its response
    and an event reader."""
    async with aconnect_sse(http, "GET", path) as source:
        assert source.response.status_code == 200, source.response.status_code
        yield source.response, EventReader(source.aiter_sse())


@contextlib.asynccontextmanager
async def _streams() -> AsyncIterator[Any]:
    """`open_stream(http, forged=...)`: opens an SSE stream with a forged X-Forwarded-For and
    keeps it open until the end of the block; returns its status."""
    opened: list[httpx.Response] = []

    async def open_stream(http: httpx.AsyncClient, forged: str) -> int:
        request = http.build_request(
            "GET", "/sse?symbols=BTCUSDT", headers={"X-Forwarded-For": forged}
        )
        async with asyncio.timeout(WAIT):
            response = await http.send(request, stream=True)
        opened.append(response)
        if response.status_code == 429:
            assert response.headers["retry-after"] == "10"
        return response.status_code

    try:
        yield open_stream
    finally:
        for response in opened:
            await response.aclose()


async def _receive(ws: Any, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if predicate(message):
                return message
