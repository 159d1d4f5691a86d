"""Load generator: holds N SSE viewers, or N WebSocket clients, and measures what they receive.

Run as `python -m bench.load --port P --path /sse?topics=... --viewers N --seconds D` (SSE), or
with `--path /ws/price --ws BTCUSDT,ETHUSDT` (WebSocket clients, each subscribing to those
symbols). It connects every viewer, prints `ready <seconds to connect> <viewers without data>`,
waits for a line on stdin, measures for D seconds, then writes a JSON report to --out: timed
events, bytes, latency histograms, viewers dropped, its own CPU.
An SSE event's latency is its arrival time minus the `data-event-time` of the fragment's root
element; events whose root carries none (status, "loading") are not timed. Bytes are everything
read from the socket (HTTP chunk framing, WebSocket frame headers included). Two ways of reading
SSE, whatever the event names:

- by default, the cheapest that is exact for price cards, whose root holds the fragment's only
  `data-event-time`: every such attribute is one timed event. The fan-out scenarios need this:
  at a million events a second the generator must stay far from its own limit.
- with `--kinds`, each event is parsed out by name (`price-BTCUSDT`, `book-BTCUSDT`, `status`):
  the root element's event time only, and events, bytes and latency per kind of event (`price`,
  `book`, ...). About twice the cost per event; the market scenario sends few, large events.

A WebSocket client (`--ws`) walks the frames' headers (answering the server's pings, as a client
must) and counts each complete message with an `"event_time":<ms>` as one timed event: the
`price` messages, timed by Binance's event time; `subscribed` and `status` are not timed.

Viewers are plain asyncio protocols (no HTTP or WebSocket client library), so one process can
hold thousands and count hundreds of thousands of events a second; the JSON says how busy it was,
so a run can tell when the load generator, not the server, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

MARK = b'data-event-time="'

# One event's start: its name, then its data line up to the end of the root element's opening tag
# (fragments are one line, and autoescape keeps `>` out of attribute values), with the root's
# event time if it has one. A match needs the whole opening tag, so one cut by a packet boundary
# waits for the next read.
EVENT = re.compile(
    rb'\nevent: ([^\r\n]*)\r\ndata: (?:<[^>\r\n]*?data-event-time="(\d+)")?[^>\r\n]*[>\r]'
)
# Longest event start kept for the next read: a name and a root tag, with room to spare.
TAIL = 1024
# Latency buckets of 0.1 ms up to 60 s: fine enough for p50 at 1 ms, and histograms from several
# processes add up. A flat list, because counting must cost next to nothing per event.
BUCKETS_PER_MS = 10
LAST_BUCKET = 60_000 * BUCKETS_PER_MS
# Latencies recorded per read of a socket, however many events it brought: every event's up to
# EXACT of them, SAMPLES spread over the read beyond.
SAMPLES = 4
EXACT = 8
# How long the viewers of one load process may take, all told, to connect and see a first
# timed event; whoever has not by then counts as failed ("not connected").
CONNECT_TIMEOUT = 90.0
# A timed WebSocket message: pricestream's and the floor's JSON, as msgspec writes it (no spaces).
JSON_EVENT_TIME = re.compile(rb'"event_time":(\d+)')
# WebSocket opcodes (RFC 6455, 5.2) a client must act on.
TEXT, PING, PONG = 0x1, 0x9, 0xA
# Any 16 bytes will do (RFC 6455, 4.1): the client trusts the server it was pointed at.
WS_KEY = base64.b64encode(b"pricestream-load").decode()


def _sample(buf: bytes, count: int, limit: int) -> list[bytes]:
    """Event times standing for the `count` complete events in `buf` (`limit` is where the
    last one's attribute starts): every one in a read of up to EXACT events, so the usual
    small reads are measured exactly; in a bigger read, SAMPLES of them, the first complete
    one after the middle of each of SAMPLES equal parts of the read (events are of about one
    size). A few short `find`s whatever the size of the read: at saturation one holds
    hundreds, and finding each of them cost the generator more than the server its send."""
    times = []
    at = -1
    if count <= EXACT:
        for _ in range(count):
            at = buf.find(MARK, at + 1)
            start = at + len(MARK)
            times.append(buf[start : buf.find(b'"', start)])
        return times
    for k in range(SAMPLES):
        at = buf.find(MARK, max(at + 1, (2 * k + 1) * len(buf) // (2 * SAMPLES)))
        if at < 0 or at > limit:
            break
        start = at + len(MARK)
        times.append(buf[start : buf.find(b'"', start)])
    return times


def kind(name: bytes) -> str:
    """`price-BTCUSDT` -> `price`, `chart-BTCUSDT-1m` -> `chart`: per-kind totals over symbols."""
    return name.split(b"-", 1)[0].decode("ascii", "replace")


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.events = 0  # timed events: those whose fragment carries a data-event-time
        self.bytes = 0
        self.kinds: dict[bytes, list[int]] = {}  # event name -> [events, bytes]
        self.weighted = [0.0] * (LAST_BUCKET + 1)
        # The second half of the window alone: latency that grows with time shows up here.
        self.late = [0.0] * (LAST_BUCKET + 1)
        self.midpoint = float("inf")
        self.dropped = 0
        # Latency per kind of event, sparse (bucket -> weight), found by event name.
        self.kind_latency: dict[str, dict[int, float]] = {}
        self.latency_of: dict[bytes, dict[int, float]] = {}

    def latency(self, name: bytes) -> dict[int, float]:
        histogram = self.latency_of.get(name)
        if histogram is None:
            histogram = self.kind_latency.setdefault(kind(name), {})
            self.latency_of[name] = histogram
        return histogram


class Viewer(asyncio.Protocol):
    """One SSE connection; counts timed events, bytes and latency as they arrive."""

    def __init__(self, request: bytes, stats: Stats, first: asyncio.Future[None]) -> None:
        self.request, self.stats, self.first = request, stats, first
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        buf = self.tail + data if self.tail else data
        if stats.measuring:
            stats.bytes += len(data)
        # Counted in C (bytes.count), not by a regular expression: at half a million events a
        # second the reader must cost next to nothing. An attribute cut by the read boundary
        # (no closing quote yet) waits in the tail for the next read.
        count = buf.count(MARK)
        if not count:
            self.tail = buf[-len(MARK) :]
            return
        last = buf.rfind(MARK)
        end = buf.find(b'"', last + len(MARK))
        if end < 0:
            count -= 1
            self.tail = buf[last:]
            last = buf.rfind(MARK, 0, last)
        else:
            self.tail = buf[-len(MARK) :]
        if not count:
            return
        if stats.measuring:
            self.record(count, _sample(buf, count, last))
        if not self.first.done():
            self.first.set_result(None)

    def record(self, count: int, times: list[bytes], names: list[bytes] | None = None) -> None:
        """Count `count` timed events, and the latency of the few in `times` (at most SAMPLES,
        evenly spread; per kind too, given each one's name in `names`), each standing for an
        equal share: a big batch costs the generator no more than a small one."""
        stats = self.stats
        now = time.time() * 1000 * BUCKETS_PER_MS
        stats.events += count
        weight = count / len(times)
        late = time.monotonic() >= stats.midpoint
        for i, event_time in enumerate(times):
            bucket = min(LAST_BUCKET, max(0, int(now - int(event_time) * BUCKETS_PER_MS)))
            stats.weighted[bucket] += weight
            if late:
                stats.late[bucket] += weight
            if names is not None:
                histogram = stats.latency(names[i])
                histogram[bucket] = histogram.get(bucket, 0.0) + weight

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stats.measuring:
            self.stats.dropped += 1
        if not self.first.done():
            self.first.set_exception(ConnectionError("closed before the first timed event"))


class KindViewer(Viewer):
    """A viewer that parses each event out by name: the root's event time only, and events,
    bytes and latency per kind of event."""

    def __init__(self, request: bytes, stats: Stats, first: asyncio.Future[None]) -> None:
        super().__init__(request, stats, first)
        self.offset = 0  # stream position of the tail's first byte
        self.current = b""  # the event being received, and where in the stream it started
        self.started = 0

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        buf = self.tail + data
        measuring = stats.measuring
        if measuring:
            stats.bytes += len(data)
        cut = 0
        times: list[bytes] = []
        names: list[bytes] = []
        for m in EVENT.finditer(buf):
            name, event_time = m.groups()
            start = self.offset + m.start()
            if measuring:
                # The previous event ends where this one starts.
                counts = stats.kinds.setdefault(self.current, [0, 0])
                counts[0] += 1
                counts[1] += start - self.started
            if event_time is not None:
                times.append(event_time)
                names.append(name)
            self.current, self.started = name, start
            cut = m.end()
        if times:
            if measuring:
                step = max(1, len(times) // SAMPLES)
                self.record(len(times), times[::step], names[::step])
            if not self.first.done():
                self.first.set_result(None)
        # Drop what was counted; keep what might be an event start cut by the packet boundary.
        keep = min(len(buf) - cut, TAIL)
        self.offset += len(buf) - keep
        self.tail = buf[len(buf) - keep :]


class WsClient(Viewer):
    """One WebSocket client: the handshake, one subscribe message, then every frame's header
    walked (pings answered) and each complete `price` message counted and timed."""

    def __init__(
        self, request: bytes, subscribe: bytes, stats: Stats, first: asyncio.Future[None]
    ) -> None:
        super().__init__(request, stats, first)
        self.subscribe = subscribe
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        stats = self.stats
        if stats.measuring:
            stats.bytes += len(data)
        buf = self.tail + data if self.tail else data
        pos = 0
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.tail = buf
                return
            assert self.transport is not None
            if not buf.startswith(b"HTTP/1.1 101"):
                self.transport.close()  # refused: connection_lost tells the runner
                return
            self.open = True
            self.transport.write(self.subscribe)
            pos = end + 4
        start, size = pos, len(buf)
        # Server frames are never masked: a header of 2, 4 or 10 bytes, then the payload.
        while pos + 2 <= size:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif length == 127:
                length, head = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            end = pos + head + length
            if end > size:
                break  # the rest of this frame comes with the next read
            if buf[pos] & 0x0F == PING:
                assert self.transport is not None
                self.transport.write(client_frame(PONG, buf[pos + head : end]))
            pos = end
        times = JSON_EVENT_TIME.findall(buf, start, pos)
        if times:
            if stats.measuring:
                self.record(len(times), times[:: max(1, len(times) // SAMPLES)])
            if not self.first.done():
                self.first.set_result(None)
        self.tail = buf[pos:]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final frame as a client must send it: masked (RFC 6455, 5.3), payload under 64 KiB."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def run(
    port: int, path: str, viewers: int, seconds: float, kinds: bool, ws: list[str] | None
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stats = Stats()
    protocol: Callable[[asyncio.Future[None]], asyncio.Protocol]
    if ws is not None:
        subscribe = json.dumps({"type": "subscribe", "symbols": ws}).encode()
        protocol = functools.partial(
            WsClient, ws_request(path), client_frame(TEXT, subscribe), stats
        )
    else:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        protocol = functools.partial(KindViewer if kinds else Viewer, request.encode(), stats)
    started = time.monotonic()
    deadline = started + CONNECT_TIMEOUT
    firsts = []
    transports = []
    for i in range(viewers):
        first: asyncio.Future[None] = loop.create_future()
        # A server too busy to accept leaves its backlog full, and a connect then waits on
        # SYN retries for minutes: the whole phase has one deadline, and whoever is not
        # connected by then counts as failed.
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(functools.partial(protocol, first), "127.0.0.1", port),
                max(0.001, deadline - time.monotonic()),
            )
        except (TimeoutError, OSError):
            break
        transports.append(transport)
        firsts.append(first)
        if i % 200 == 199:
            await asyncio.sleep(0)  # let the first ones read while the rest connect
    if firsts:
        await asyncio.wait(firsts, timeout=max(0.0, deadline - time.monotonic()))
    failed = viewers - len(firsts)
    failed += sum(not f.done() or f.exception() is not None for f in firsts)
    for f in firsts:
        f.cancel()  # a viewer that closes later has nobody left to tell
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
        "bytes": stats.bytes,
        # Per kind of event, summed over symbols: [events, bytes]. An event's count and bytes
        # are booked when the next one starts, so the window's edges shift them by one event.
        "kinds": _by_kind(stats.kinds),
        "seconds": wall,
        "dropped": stats.dropped,
        "cpu_percent": 100 * cpu / wall,
        "histogram": {str(k): round(v) for k, v in enumerate(stats.weighted) if v},
        "late_histogram": {str(k): round(v) for k, v in enumerate(stats.late) if v},
        "kind_histograms": {
            name: {str(k): round(v) for k, v in sorted(h.items()) if round(v)}
            for name, h in stats.kind_latency.items()
        },
    }


def _by_kind(names: dict[bytes, list[int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, (events, size) in names.items():
        if not name:
            continue  # the HTTP response head, before the first event
        total = out.setdefault(kind(name), [0, 0])
        total[0] += events
        total[1] += size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    parser.add_argument(
        "--kinds", action="store_true", help="parse each event: totals per kind of event"
    )
    parser.add_argument(
        "--ws",
        default=None,
        help="WebSocket clients instead, each subscribing to these symbols (comma-separated)",
    )
    args = parser.parse_args()
    ws = args.ws.split(",") if args.ws else None
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop  # a faster loop, so the load generator stays out of the way

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args.port, args.path, args.viewers, args.seconds, args.kinds, ws))
    # A file, not stdout: a report of 100 KB through a pipe was seen cut short.
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
