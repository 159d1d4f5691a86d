"""Upstream faults, one by one, seen from a viewer: the board keeps serving, says what is
happening, recovers by itself, and resubscribes within Binance's limits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from app.binance import retry_delay
from app.config import Settings
from app.demo import MAX_INCOMING_PER_SECOND, DemoExchange
from tests.conftest import WAIT, EventReader, eventually, open_sse, root, run_server, settings_for

pytestmark = pytest.mark.anyio
Fault = Callable[[DemoExchange], Awaitable[None]]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
STREAMS = {"btcusdt@trade", "btcusdt@ticker", "ethusdt@trade", "ethusdt@ticker"}


@pytest.fixture
async def lively() -> AsyncIterator[DemoExchange]:
    """A simulator that trades ten times a second and sends tickers twice a second."""
    async with DemoExchange(trades_per_second=10, ticker_interval=0.5, seed=3) as ex:
        yield ex


def fault_settings(ex: DemoExchange) -> Settings:
    return settings_for(ex, stall_timeout=1.0, backoff_initial=0.05, backoff_max=0.4)


def is_live_price(symbol: str) -> Callable[..., bool]:
    def check(event: object) -> bool:
        data, name = getattr(event, "data", ""), getattr(event, "event", "")
        if name != f"price-{symbol}":
            return False
        article = root(data)
        return "data-price" in article.attrs and "stale" not in article.classes

    return check


def status_is(state: str) -> Callable[..., bool]:
    return lambda e: e.event == "status" and f'data-state="{state}"' in e.data


def not_honest_yet(e: object) -> bool:
    """A status that is not live, or a stale price: the viewer is being told the truth."""
    name, data = getattr(e, "event", ""), getattr(e, "data", "")
    if name == "status":
        return 'data-state="live"' not in data
    return name.startswith("price-") and "stale" in root(data).classes


@contextlib.asynccontextmanager
async def watch(http: httpx.AsyncClient) -> AsyncIterator[EventReader]:
    """A viewer of SYMBOLS, once it sees both live; the test runs on its one SSE stream."""
    async with open_sse(http, "/sse?symbols=" + ",".join(SYMBOLS)) as events:
        await events.until(status_is("live"))
        for s in SYMBOLS:
            await events.until(is_live_price(s))
        yield events


def paced(ex: DemoExchange, since: int, rate: float) -> list[list[str]]:
    """The SUBSCRIBE batches sent since control_log[since]; asserts they kept to Binance's
    limit. Times are when the exchange received them, so a busy machine can bunch two that
    left `1/rate` apart; what must hold is that no second ever carries more than Binance
    allows (and `rate` stays below it, so there is room for that jitter)."""
    assert rate < MAX_INCOMING_PER_SECOND
    log = [(t, m) for t, m in ex.control_log[since:] if m.get("method") == "SUBSCRIBE"]
    times = [t for t, _ in log]
    for i, start in enumerate(times):
        within = [t for t in times[i:] if t - start < 1.0]
        assert len(within) <= MAX_INCOMING_PER_SECOND, times
    return [m["params"] for _, m in log]


async def refuse_then_reset(
    ex: DemoExchange, status: int, count: int, headers: dict[str, str] | None = None
) -> None:
    ex.refuse_next(count, status, headers=headers)
    ex.reset_connections()


async def stop_listening(ex: DemoExchange) -> None:
    await ex.stop_listening()


async def listen_again(ex: DemoExchange) -> None:
    await ex.start()


async def stall(ex: DemoExchange) -> None:
    ex.stall()


async def unstall(ex: DemoExchange) -> None:
    ex.stall(False)


async def nothing(ex: DemoExchange) -> None:
    """The refusals run out by themselves."""


async def reset(ex: DemoExchange) -> None:
    ex.reset_connections()


async def junk(ex: DemoExchange) -> None:
    for raw in (
        "{not json",
        "[]",
        '{"e":"trade","s":"BTCUSDT"}',
        '{"e":"mystery","E":1}',
        '{"stream":"x","data":{}}',
    ):
        ex.send_raw(raw)


LASTING: dict[str, tuple[Fault, Fault]] = {
    "connection refused": (stop_listening, listen_again),
    "handshake 451": (lambda ex: refuse_then_reset(ex, 451, 2), nothing),
    "handshake 429 with Retry-After": (
        lambda ex: refuse_then_reset(ex, 429, 2, {"Retry-After": "1"}),
        nothing,
    ),
    "handshake 503": (lambda ex: refuse_then_reset(ex, 503, 4), nothing),
    "silent stall": (stall, unstall),
}


@pytest.mark.parametrize("name", list(LASTING))
async def test_lasting_fault_is_told_and_recovered(lively: DemoExchange, name: str) -> None:
    fault, recover = LASTING[name]
    settings = fault_settings(lively)
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with watch(http) as events:
            mark = len(lively.control_log)
            await fault(lively)
            await events.until(not_honest_yet)
            health = (await http.get("/healthz")).json()
            assert health["status"] != "ok" or health["stale"], health
            await asyncio.sleep(0.3)
            await recover(lively)
            # Recovered by itself: live again, with fresh prices, on the same SSE stream.
            await events.until(status_is("live"))
            for s in SYMBOLS:
                await events.until(is_live_price(s))
            await eventually(lambda: lively.subscriptions() == STREAMS)
            batches = paced(lively, mark, settings.control_rate)
            assert set(itertools.chain(*batches)) == STREAMS
            health = (await http.get("/healthz")).json()
            assert health["status"] == "ok" and health["upstream"]["reconnects"] >= 1
            assert health["viewers"] == 1


BRIEF: dict[str, Fault] = {
    "TCP reset mid-stream": reset,
    "close 1001 (the 24 h cut)": lambda ex: ex.drop_connections(1001, "going away"),
    "close 1008 Too many requests": lambda ex: ex.drop_connections(1008, "Too many requests"),
    "malformed and unknown frames": junk,
}


@pytest.mark.parametrize("name", list(BRIEF))
async def test_brief_fault_keeps_the_board_serving(lively: DemoExchange, name: str) -> None:
    async with (
        run_server(fault_settings(lively)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with watch(http) as events:
            before = (await http.get("/healthz")).json()["upstream"]
            await BRIEF[name](lively)
            for s in SYMBOLS:  # prices keep coming on the same stream
                await events.until(is_live_price(s))
            await events.until(is_live_price("BTCUSDT"))
            after = (await http.get("/healthz")).json()["upstream"]
            if name.startswith("malformed"):
                assert after["bad_frames"] == before["bad_frames"] + 5
                assert after["reconnects"] == before["reconnects"]
            else:
                assert after["reconnects"] == before["reconnects"] + 1
                assert after["state"] == "live"


async def test_server_shutdown_notice_is_seamless(lively: DemoExchange) -> None:
    async with (
        run_server(fault_settings(lively)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with watch(http) as events:
            seen_before = len(events.seen)
            lively.server_shutdown()
            await eventually(lambda: len(lively.close_codes) == 1)
            await events.until(is_live_price("BTCUSDT"))
            health = (await http.get("/healthz")).json()["upstream"]
            assert (health["rotations"], health["reconnects"], health["state"]) == (1, 0, "live")
            assert lively.close_codes == [1000]  # we closed the old link ourselves, politely
            assert not any(not_honest_yet(e) for e in events.seen[seen_before:])


async def test_one_silent_symbol_goes_stale_alone_and_heals(lively: DemoExchange) -> None:
    async with (
        run_server(fault_settings(lively)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with watch(http) as events:
            lively.mute("ethusdt@trade")
            lively.mute("ethusdt@ticker")
            stale = await events.until(
                lambda e: e.event == "price-ETHUSDT" and "stale" in root(e.data).classes
            )
            assert root(stale.data).attrs["data-price"]  # the last price, greyed, still shown
            await events.until(is_live_price("BTCUSDT"))  # the other symbol flows on
            health = (await http.get("/healthz")).json()
            assert health["stale"] == ["price:ETHUSDT"]
            assert health["upstream"]["reconnects"] == 0  # the link is fine; one stream is not
            # The once-a-second ticker went quiet while the link flowed: it is asked for again.
            await eventually_async(lambda: resubscribed(http))
            lively.mute("ethusdt@trade", False)
            lively.mute("ethusdt@ticker", False)
            await events.until(is_live_price("ETHUSDT"))


async def resubscribed(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/healthz")).json()["upstream"]["resubscribes"] >= 1)


async def eventually_async(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT):
        while not await check():
            await asyncio.sleep(0.05)


def test_reconnect_storms_stay_far_below_binance_limit() -> None:
    """Binance allows 300 connection attempts per 5 minutes per IP (binance-streams.md 3.3)."""
    settings = Settings()
    for error in (OSError("refused"), ConnectionResetError()):
        elapsed, attempts = 0.0, 0
        for failures in itertools.count():
            attempts += 1
            elapsed += retry_delay(error, failures, settings)[0]
            if elapsed > 300:
                break
        assert attempts <= 15, attempts  # one shard; even 20 shards stay under 300
