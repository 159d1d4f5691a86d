"""Many viewers, slow viewers, hostile viewers: none of them may hurt the others."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest

from app.demo import DemoExchange
from app.simulation import MARKET
from tests.conftest import (
    WAIT,
    LiveServer,
    RawViewer,
    both_paths,
    eventually,
    on_path,
    open_sse,
    parse_html,
    root,
    run_server,
    settings_for,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def crowd_server(exchange: DemoExchange) -> AsyncIterator[LiveServer]:
    # Every update rendered (no rate limit): the most the fan-out can be asked to carry.
    settings = settings_for(
        exchange, grace_period=0.5, max_streams_per_client=5000, render_interval=0.0
    )
    async with run_server(settings) as server:
        yield server


async def test_2000_viewers_in_waves_leave_nothing_behind(
    crowd_server: LiveServer, exchange: DemoExchange
) -> None:
    port = int(crowd_server.url.rsplit(":", 1)[1])
    hub, limits = crowd_server.app.state.hub, crowd_server.app.state.limits
    # First-use costs out of the way, the simulator's chart history for every symbol included
    # (it shares this process, and its memory is not ours to measure).
    wanted = ",".join(m[0] for m in MARKET[:14])
    warm = await RawViewer.open(port, f"/sse?symbols={wanted}")
    await warm.first_price()
    await eventually(
        lambda: all(
            e.history_task is not None and e.history_task.done() for e in hub.entries.values()
        )
    )
    await warm.close()
    await eventually(lambda: not hub.subscribers and not exchange.subscriptions())
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        memory_before = tracemalloc.get_traced_memory()[0]
        for wave in range(4):
            symbols = ",".join(m[0] for m in MARKET[wave * 3 : wave * 3 + 5])
            viewers = await asyncio.gather(
                *(RawViewer.open(port, f"/sse?symbols={symbols}") for _ in range(500))
            )
            await asyncio.gather(*(v.first_price() for v in viewers))
            assert len(hub.subscribers) == 500
            await asyncio.gather(*(v.close() for v in viewers))
            del viewers
            await eventually(lambda: not hub.subscribers)
        await eventually(lambda: sum(limits.open.values()) == 0)
        # After the grace period, nothing is left subscribed upstream.
        await eventually(lambda: not hub.entries and not exchange.subscriptions())
        await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - memory_before
    finally:
        tracemalloc.stop()
    # What stays is container capacity (the task WeakSet, the hub's sets at their high-water
    # size), about 0.6 MiB here; a leak of even 1 KiB per viewer would be 2 MiB.
    assert grown < 2 * 2**20, f"{grown / 2**20:.1f} MiB still held after 2,000 viewers left"


@both_paths
async def test_a_viewer_that_never_reads_stays_bounded_and_slows_no_one(
    exchange: DemoExchange, direct: bool
) -> None:
    settings = settings_for(exchange, render_interval=0.0, direct_writes=direct)
    async with run_server(settings) as server:
        await _never_reads(server, exchange, direct)


async def _never_reads(server: LiveServer, exchange: DemoExchange, direct: bool) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    hub = server.app.state.hub
    every = [m[0] for m in MARKET]
    stuck = await RawViewer.open(port, "/sse?symbols=" + ",".join(every), rcvbuf=4096)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
        open_sse(http, "/sse?symbols=BTCUSDT") as fast,
    ):
        await eventually(lambda: exchange.subscriptions() >= {f"{s.lower()}@trade" for s in every})
        await eventually(lambda: on_path(server, direct, 2))
        [slow_sub] = [s for s in hub.subscribers if len(s.topics) == len(every)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            published = 0
            for _ in range(300):  # about 6 MB of fragments for the viewer that never reads
                for symbol in every:
                    exchange.trade(symbol)
                    published += 1
                await asyncio.sleep(0)
            last = exchange.trade("BTCUSDT")
            sent_at = time.monotonic()
            await fast.until(
                lambda e: (
                    e.event == "price-BTCUSDT" and root(e.data).attrs.get("data-price") == last["p"]
                )
            )
            lag = time.monotonic() - sent_at
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    # One slot per symbol and the status: never a queue, whatever it missed.
    assert len(slow_sub.pending) <= len(every) + 1
    assert grown < 8 * 2**20, f"{grown / 2**20:.1f} MiB held for {published} updates"
    assert lag < 2.0, f"the reading viewer waited {lag:.2f} s behind the stuck one"
    await stuck.close()


HOSTILE = [
    "<script>alert(1)</script>",
    "\"'><img src=x onerror=alert(1)>",
    "BTC\u202eUSDT",
    "币安人生USDT",
    "BTC\x00USDT",
    "\x1b[31mBTCUSDT",
    "A" * 10_000,
    "%",
    "../../etc/passwd",
    ",".join(["BTCUSDT"] * 300),
]


@pytest.mark.parametrize("payload", HOSTILE, ids=lambda p: repr(p)[:24])
@pytest.mark.parametrize(
    "where",
    [
        "/?symbols={}",
        "/sse?symbols={}",
        "/fragment/{}",
        "/embed/{}",
        "/embed?symbols={}",
        "/?symbols=BTCUSDT&add={}",
    ],
)
async def test_hostile_input_gets_a_sentence_never_a_reflection(
    http: httpx.AsyncClient, where: str, payload: str
) -> None:
    url = where.format(httpx.URL("", params={"q": payload}).query.decode()[2:])
    response = await http.get(url)
    assert response.status_code in (400, 404), (url[:80], response.status_code)
    body = response.text
    assert "Traceback" not in body and len(body) < 10_000
    assert "\x00" not in body and "\x1b" not in body  # control characters are shown escaped
    if response.headers["content-type"].startswith("text/html"):
        # A page: the input may be quoted, but only as text, never as markup.
        assert "<script>alert" not in body and "<img" not in body
        sentences = [e.text for e in parse_html(body) if e.tag == "p" or "form-error" in e.classes]
        assert any(s.strip() for s in sentences)
    else:
        # For programs: the sentence names the bad part, as text that no browser may sniff.
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert body.strip()


async def test_per_client_and_total_limits(exchange: DemoExchange) -> None:
    settings = settings_for(exchange, max_streams_per_client=2, max_viewers=3)
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with open_sse(http, "/sse?symbols=BTCUSDT"), open_sse(http, "/sse?symbols=ETHUSDT"):
            third = await http.get("/sse?symbols=BTCUSDT")
            assert third.status_code == 429
            assert third.headers["retry-after"] == "10"
            assert third.text.startswith("too many live streams from your address (2)")
        # Closed streams give their places back.
        async with open_sse(http, "/sse?symbols=BTCUSDT") as again:
            await again.next()
        limits = server.app.state.limits
        await eventually(lambda: sum(limits.open.values()) == 0)
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # three other visitors
            assert limits.acquire(address) is None
        full = await http.get("/sse?symbols=BTCUSDT")
        assert full.status_code == 503
        assert full.text == "the server is full (3 live viewers); try again soon"


@both_paths
async def test_a_reader_stuck_in_one_send_is_cut_off(exchange: DemoExchange, direct: bool) -> None:
    # Every update rendered (no rate limit), so the stuck socket fills in a second or two.
    settings = settings_for(
        exchange,
        send_timeout=1.0,
        max_streams_per_client=50,
        render_interval=0.0,
        direct_writes=direct,
    )
    async with run_server(settings) as server:
        port = int(server.url.rsplit(":", 1)[1])
        hub, limits = server.app.state.hub, server.app.state.limits
        every = [m[0] for m in MARKET]
        stuck = await RawViewer.open(port, "/sse?symbols=" + ",".join(every), rcvbuf=4096)
        transport = stuck.writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # and now it reads nothing at all
        await eventually(lambda: on_path(server, direct, 1))
        await eventually(lambda: exchange.subscriptions() >= {f"{s.lower()}@trade" for s in every})
        async with asyncio.timeout(WAIT):
            while hub.subscribers:  # fill its socket until a send blocks, then wait it out
                for symbol in every:
                    exchange.trade(symbol)
                await asyncio.sleep(0.01)
        await eventually(lambda: sum(limits.open.values()) == 0)
        await stuck.close()


async def test_head_and_other_methods_on_the_stream(http: httpx.AsyncClient) -> None:
    head = await http.head("/sse?symbols=BTCUSDT")
    assert head.status_code == 200
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    post = await http.post("/sse?symbols=BTCUSDT")
    assert post.status_code == 405
