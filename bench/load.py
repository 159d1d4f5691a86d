"""Load generator: holds N SSE viewers on one URL and measures what they receive.

Run as `python -m bench.load --port P --path /sse?symbols=... --viewers N --seconds D`. It
connects every viewer, prints `ready <seconds to connect>`, waits for a line on stdin, measures
for D seconds, then writes a JSON report to --out: events, latency histograms, viewers dropped,
its own CPU.
Viewers are plain asyncio protocols (no HTTP client library), so one process can hold thousands
and count hundreds of thousands of events a second; the JSON says how busy it was, so a run can
tell when the load generator, not the server, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

EVENT_TIME = re.compile(rb'data-event-time="(\d+)"')
# Latency buckets of 0.1 ms up to 60 s: fine enough for p50 at 1 ms, and histograms from several
# processes add up. A flat list, because counting must cost next to nothing per event.
BUCKETS_PER_MS = 10
LAST_BUCKET = 60_000 * BUCKETS_PER_MS
# Latencies recorded per read of a socket, however many events it brought.
SAMPLES = 4
# How long the viewers may take to connect and see a first price before they count as failed.
CONNECT_TIMEOUT = 60.0


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.events = 0
        self.weighted = [0.0] * (LAST_BUCKET + 1)
        # The second half of the window alone: latency that grows with time shows up here.
        self.late = [0.0] * (LAST_BUCKET + 1)
        self.midpoint = float("inf")
        self.dropped = 0


class Viewer(asyncio.Protocol):
    """One SSE connection; counts `data-event-time` attributes as they arrive."""

    def __init__(self, request: bytes, stats: Stats, first: asyncio.Future[None]) -> None:
        self.request, self.stats, self.first = request, stats, first
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        times = EVENT_TIME.findall(buf)
        if times:
            stats = self.stats
            if stats.measuring:
                now = time.time() * 1000 * BUCKETS_PER_MS
                count = len(times)
                stats.events += count
                # At most SAMPLES latencies per read, each standing for its share of the events:
                # a big batch costs the generator no more than a small one.
                step = max(1, count // SAMPLES)
                weight = count / len(times[::step])
                late = time.monotonic() >= stats.midpoint
                for t in times[::step]:
                    bucket = min(LAST_BUCKET, max(0, int(now - int(t) * BUCKETS_PER_MS)))
                    stats.weighted[bucket] += weight
                    if late:
                        stats.late[bucket] += weight
            if not self.first.done():
                self.first.set_result(None)
            # Drop what was counted; keep what might be a match cut by the packet boundary.
            buf = buf[buf.rfind(b'data-event-time="') + 17 :]
        self.tail = buf[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stats.measuring:
            self.stats.dropped += 1
        if not self.first.done():
            self.first.set_exception(ConnectionError("closed before the first price"))


async def run(port: int, path: str, viewers: int, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stats = Stats()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    started = time.monotonic()
    firsts = []
    transports = []
    for i in range(viewers):
        first: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            functools.partial(Viewer, request, stats, first), "127.0.0.1", port
        )
        transports.append(transport)
        firsts.append(first)
        if i % 200 == 199:
            await asyncio.sleep(0)  # let the first ones read while the rest connect
    await asyncio.wait(firsts, timeout=CONNECT_TIMEOUT)
    failed = sum(not f.done() or f.exception() is not None for f in firsts)
    connect_seconds = time.monotonic() - started
    print(f"ready {connect_seconds:.3f} {failed}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu0, wall0 = time.process_time(), time.monotonic()
    stats.midpoint = wall0 + seconds / 2
    stats.measuring = True
    await asyncio.sleep(seconds)
    stats.measuring = False
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for t in transports:
        t.close()
    return {
        "viewers": viewers,
        "failed": failed,
        "connect_seconds": connect_seconds,
        "events": stats.events,
        "seconds": wall,
        "dropped": stats.dropped,
        "cpu_percent": 100 * cpu / wall,
        "histogram": {str(k): round(v) for k, v in enumerate(stats.weighted) if v},
        "late_histogram": {str(k): round(v) for k, v in enumerate(stats.late) if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    args = parser.parse_args()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop  # a faster loop, so the load generator stays out of the way

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args.port, args.path, args.viewers, args.seconds))
    # A file, not stdout: a report of 100 KB through a pipe was seen cut short.
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
