"""What alerts cost: a trade's evaluation with 0, 1,000 and 1,000,000 armed alerts on its symbol,
and the time from a trade to its alert's webhook arriving at a local target.

    python -m bench.alerts              # about half a minute
    python -m bench.alerts --trades 200000 --firings 50

The first part times `AlertBook.crossed`, which every trade of an alerted symbol calls, with the
alerts armed at prices the trades never reach (the common case: nothing fires). The second runs
the real server (demo exchange, SQLite in a temporary folder) and a local HTTP target; each
firing is a trade published on the simulator, and the latency is its receipt at the target
minus the trade's event time: decode, evaluate, commit the firing, then POST.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx

from app.alerts import AlertBook
from app.application import create_app, drain
from app.config import Settings
from app.demo import DemoExchange
from app.server import Server, uvicorn_config
from app.store import Alert


def cost_per_trade(armed: int, trades: int) -> float:
    """Nanoseconds per trade for `crossed` with `armed` alerts above every traded price."""
    book = AlertBook()
    for i in range(armed):
        book.add(Alert(f"{i:08d}", "BTCUSDT", "above", str(200_000 + i), None, None, "armed", 0))
    prices = [Decimal(90_000 + (i % 1000)) for i in range(trades)]
    started = time.perf_counter_ns()
    for price in prices:
        book.crossed("BTCUSDT", price)
    return (time.perf_counter_ns() - started) / trades


@contextlib.asynccontextmanager
async def server(settings: Settings) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings)
    running = Server(uvicorn_config(app, settings, log_level="warning"), lambda: drain(app))
    task = asyncio.create_task(running.serve(sockets=[sock]))
    while not running.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        running.should_exit = True
        await task


async def firing_latency(firings: int) -> list[float]:
    """Seconds from each trade's event time to its webhook's arrival."""
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        arrived.put_nowait(time.time())
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    hook = await asyncio.start_server(target, "127.0.0.1", 0)
    hook_url = f"http://127.0.0.1:{hook.sockets[0].getsockname()[1]}/hook"
    latencies = []
    async with DemoExchange(trades_per_second=0, ticker_interval=3600, kline_interval=3600) as ex:
        settings = Settings(
            port=0,
            upstream=ex.ws_url,
            rest=ex.rest_url,
            log_level="warning",
            data_dir=tempfile.mkdtemp(prefix="pricestream-bench-"),
        )
        async with server(settings) as base, httpx.AsyncClient(base_url=base) as http:
            for i in range(firings):
                threshold = f"{200_000 + i}"
                answer = await http.post(
                    "/api/v1/alerts",
                    json={
                        "symbol": "BTCUSDT",
                        "condition": "above",
                        "price": threshold,
                        "webhook": hook_url,
                    },
                )
                answer.raise_for_status()
                while "btcusdt@trade" not in ex.subscriptions():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)  # the alert is created before the trade is made
                payload = ex.trade("BTCUSDT", price=str(200_000 + i))
                got = await asyncio.wait_for(arrived.get(), 10)
                latencies.append(got - payload["E"] / 1000)
    hook.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--firings", type=int, default=30)
    args = parser.parse_args()
    print("| armed alerts on the symbol | ns per trade |")
    print("|---:|---:|")
    for armed in (0, 1_000, 1_000_000):
        print(f"| {armed:,} | {cost_per_trade(armed, args.trades):,.0f} |", flush=True)
    latencies = asyncio.run(firing_latency(args.firings))
    ms = sorted(x * 1000 for x in latencies)
    print(
        json.dumps(
            {
                "firings": len(ms),
                "p50_ms": round(statistics.median(ms), 1),
                "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 1),
                "max_ms": round(ms[-1], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
