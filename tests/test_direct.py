"""The hub's direct writes (app.direct) against the ASGI send they replace: the same bytes on
the wire, back-pressure without a task per send, and the ways back to ASGI when they may not
be used. The fault and viewer tests run on both paths too (`both_paths`)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.asyncio.client import connect

from app.demo import DemoExchange
from app.direct import DIRECT, ChunkWriter, offer
from app.hub import Hub
from app.simulation import MARKET
from tests.conftest import (
    WAIT,
    LiveServer,
    RawViewer,
    both_paths,
    eventually,
    on_path,
    price_streams,
    run_server,
    settings_for,
)

pytestmark = pytest.mark.anyio


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def _read_until(viewer: RawViewer, marker: bytes, data: bytes = b"") -> bytes:
    """Raw bytes from the socket until `marker` has come and the chunk it is in has ended."""
    async with asyncio.timeout(WAIT):
        while marker not in data or not data.endswith(b"\n\r\n"):
            chunk = await viewer.reader.read(65536)
            assert chunk, "the stream ended"
            data += chunk
    return data


def _chunks(body: bytes) -> list[bytes]:
    """The chunks of a chunked HTTP body, each with its framing (size line and CRLF)."""
    chunks = []
    while body:
        size = body.partition(b"\r\n")[0]
        end = len(size) + 2 + int(size, 16) + 2
        assert body[end - 2 : end] == b"\r\n", "a malformed chunk"
        chunks.append(body[:end])
        body = body[end:]
    return chunks


async def test_direct_and_asgi_streams_put_the_same_bytes_on_the_wire(
    exchange: DemoExchange,
) -> None:
    # No upstream stall in the quiet market: no status changes among the updates compared.
    servers = [
        run_server(
            settings_for(exchange, render_interval=0.0, stall_timeout=60, direct_writes=direct)
        )
        for direct in (True, False)
    ]
    async with servers[0] as direct, servers[1] as asgi:
        viewers = [await RawViewer.open(_port(s), "/sse?symbols=BTCUSDT") for s in (direct, asgi)]
        heads, bodies = [], []
        for viewer in viewers:
            data = await _read_until(viewer, b"event: price-BTCUSDT")
            head, _, body = data.partition(b"\r\n\r\n")
            # The response head, but for its date: written by uvicorn on either path.
            heads.append([h for h in head.split(b"\r\n") if not h.startswith(b"date:")])
            bodies.append(body)
        assert heads[0] == heads[1]
        assert b"transfer-encoding: chunked" in heads[0]
        await eventually(lambda: on_path(direct, True, 1) and on_path(asgi, False, 1))
        # Both servers' upstream links subscribed, each its own.
        await eventually(lambda: sum("btcusdt@trade" in p.streams for p in exchange.peers) == 2)
        updates: list[bytes] = []
        # The first trade takes both upstream links live (a status event); the second is alone.
        for price in ("91234.50", "91234.60"):
            marker = b'data-price="%s"' % exchange.trade("BTCUSDT", price=price)["p"].encode()
            updates.clear()
            for i, viewer in enumerate(viewers):
                bodies[i] = await _read_until(viewer, marker, bodies[i])
                [update] = [c for c in _chunks(bodies[i]) if marker in c]
                updates.append(update)
        # One HTTP chunk each, framed alike, holding the same event.
        assert updates[0] == updates[1]
        assert updates[0].count(b"event: price-BTCUSDT\r\n") == 1
        for viewer in viewers:
            await viewer.close()


@both_paths
async def test_a_reader_that_pauses_gets_the_newest_value_when_it_reads_again(
    exchange: DemoExchange, direct: bool
) -> None:
    # Every update rendered, so the paused socket fills; the send timeout is far away, and
    # no status change or keepalive comes to carry the last update out.
    settings = settings_for(
        exchange,
        render_interval=0.0,
        max_streams_per_client=50,
        stall_timeout=60,
        sse_ping=60,
        direct_writes=direct,
    )
    async with run_server(settings) as server:
        hub: Hub = server.app.state.hub
        every = [m[0] for m in MARKET]
        viewer = await RawViewer.open(_port(server), "/sse?symbols=" + ",".join(every), rcvbuf=4096)
        transport = viewer.writer.transport
        assert isinstance(transport, asyncio.Transport)
        await eventually(lambda: exchange.subscriptions() >= {f"{s.lower()}@trade" for s in every})
        await eventually(lambda: on_path(server, direct, 1))
        [sub] = hub.subscribers
        transport.pause_reading()
        async with asyncio.timeout(WAIT):
            while sub.sending_since is None:  # until the server's side of the socket is full
                for symbol in every:
                    exchange.trade(symbol)
                await asyncio.sleep(0.01)
        # The last update comes while the socket is full, and nothing after it: the reader
        # must get it once its socket drains, with no further update to carry it.
        exchange.trade("BTCUSDT", price="90909.09")
        await eventually(lambda: "price-BTCUSDT" in sub.pending)
        assert len(sub.pending) <= len(every) + 1  # conflated: a slot per topic, no queue
        transport.resume_reading()
        await _read_until(viewer, b'data-price="90909.09000000"')
        assert not sub.cut_off and sub in hub.subscribers
        await viewer.close()


async def test_a_stream_with_a_request_pipelined_behind_it_ends_when_its_client_goes(
    exchange: DemoExchange,
) -> None:
    """uvicorn tells the pipelined request, not the stream, that the connection is gone; the
    direct stream must end anyway (its writer sees the closing socket), and give its places
    back. (Through ASGI alone the stream cannot know: see RELIABILITY, known limits.)"""
    settings = settings_for(exchange, sse_ping=0.2)
    async with run_server(settings) as server:
        hub: Hub = server.app.state.hub
        limits = server.app.state.limits
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        writer.write(
            b"GET /sse?symbols=BTCUSDT HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(WAIT):
            while b"event: price-BTCUSDT" not in await reader.read(65536):
                pass
        await eventually(lambda: hub.viewers()["sse"] == 1)
        writer.close()
        await eventually(lambda: hub.viewers()["sse"] == 0 and sum(limits.open.values()) == 0)


async def test_a_round_over_hundreds_of_viewers_lets_the_loop_in_and_loses_no_update(
    exchange: DemoExchange,
) -> None:
    # Enough viewers that writing them all takes longer than FLUSH_SLICE, so the flusher gives
    # the loop turns mid-round while trades keep coming: every viewer must still see the
    # prices in the order they were traded, each once, ending with the last.
    count = 600
    settings = settings_for(
        exchange, render_interval=0.0, stall_timeout=60, max_streams_per_client=count
    )
    async with run_server(settings) as server:
        exchange.trade("BTCUSDT", price="90000.00")
        viewers = [
            await RawViewer.open(_port(server), "/sse?symbols=BTCUSDT") for _ in range(count)
        ]
        try:
            await asyncio.gather(*(v.first_price() for v in viewers))
            await eventually(lambda: on_path(server, True, count))
            hub = server.app.state.hub
            turns_before = hub.turns_given
            traded = []
            for i in range(1, 41):
                traded.append(exchange.trade("BTCUSDT", price=f"{90000 + i}.00")["p"])
                await asyncio.sleep(0.002)  # trades land in the middle of rounds
            last = b'data-price="%s"' % traded[-1].encode()

            async def prices(viewer: RawViewer) -> list[str]:
                data = await _read_until(viewer, last)
                return re.findall(r'data-price="([0-9.]+)"', data.decode())

            seen = await asyncio.gather(*(prices(v) for v in viewers))
        finally:
            for viewer in viewers:
                await viewer.close()
    order = {price: i for i, price in enumerate(traded)}
    for got in seen:
        mine = [order[p] for p in got if p in order]
        assert mine == sorted(set(mine)), "an update out of order or twice"
        assert mine[-1] == len(traded) - 1
    # Rounds did take longer than a slice (FLUSH_SLICE, 2 ms: 600 writes take several), so the
    # loop had turns in the middle of them while the trades came.
    assert hub.turns_given > turns_before


async def test_a_compressed_websocket_is_served_through_asgi(exchange: DemoExchange) -> None:
    """With permessage-deflate each client's frames differ, so there is nothing to write once."""
    async with run_server(settings_for(exchange, ws_deflate=True)) as server:
        url = server.url.replace("http", "ws") + "/ws/price/BTCUSDT"
        hub: Hub = server.app.state.hub
        async with (
            connect(url, open_timeout=WAIT) as compressed,
            connect(url, open_timeout=WAIT, compression=None) as plain,
        ):
            await eventually(lambda: hub.viewers()["ws"] == 2)
            assert hub.health()["viewers_direct"] == 1
            await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"))
            exchange.trade("BTCUSDT", price="92345.67")
            for ws in (compressed, plain):
                async with asyncio.timeout(WAIT):
                    while True:
                        message: dict[str, Any] = json.loads(await ws.recv())
                        if message.get("price") == "92345.67000000":
                            break


async def test_another_http_protocol_falls_back_to_asgi(exchange: DemoExchange) -> None:
    """uvicorn's h11 protocol offers no writer: the stream is served through ASGI, unchanged."""
    async with run_server(settings_for(exchange), http="h11") as server:
        viewer = await RawViewer.open(_port(server), "/sse?symbols=BTCUSDT")
        await viewer.first_price()
        await eventually(lambda: on_path(server, False, 1))
        await eventually(lambda: exchange.subscriptions() >= price_streams("BTCUSDT"))
        exchange.trade("BTCUSDT", price="93456.78")
        await _read_until(viewer, b'data-price="93456.78000000"')
        await viewer.close()


def test_a_uvicorn_with_other_internals_gets_no_writer(caplog: pytest.LogCaptureFixture) -> None:
    """If uvicorn's request cycle is not the one app.direct was written for, no writer is
    offered (the app then sends through ASGI), and the log says so."""
    scope: dict[str, Any] = {}
    other = SimpleNamespace(transport=None, flow=None)  # a cycle without the fields we read
    with caplog.at_level(logging.WARNING, logger="app.direct"):
        assert offer(scope, lambda: ChunkWriter(other)) is None  # type: ignore[arg-type]
    assert DIRECT not in scope.get("extensions", {})
    assert "every update goes through ASGI" in caplog.text
