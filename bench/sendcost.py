"""What one loopback send costs on this machine: the floor under any server's CPU per event.

    python -m bench.sendcost                       # 5,000 sockets, 1,300 bytes, 10 rounds/s
    python -m bench.sendcost --sockets 1000 --rate 0   # as fast as the kernel goes

A sender on CPU 0 holds N TCP connections to a reader process on the other CPUs, and sends each
of them `--size` bytes (a price card's SSE event is about that) once a round: `--rate` rounds a
second, as the fan-out scenarios pace their updates, or back to back with `--rate 0`. It is a
bare `socket.send` loop with no event loop, framing or bookkeeping, so its CPU time per send is
what the kernel charges a sender on this machine (the TCP stack, the loopback device and, on
loopback, the receiving side's softirq and wake-up too), plus a fraction of a µs of Python. A
server whose CPU per event is compared with the floor's (`python -m bench.run`) cannot go below
this figure while it sends every event to every viewer as its own write.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import time
from multiprocessing import Process, Queue


def read_all(port: int, sockets: int, ready: Queue) -> None:  # type: ignore[type-arg]
    """The reader: connect, then drain every socket until the sender closes them."""
    others = os.sched_getaffinity(0) - {0}
    if others:
        os.sched_setaffinity(0, others)
    selector = selectors.DefaultSelector()
    for _ in range(sockets):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
    ready.put("connected")
    open_ = sockets
    while open_:
        for key, _ in selector.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                selector.unregister(sock)
                sock.close()
                open_ -= 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1300, help="bytes per send")
    parser.add_argument("--rate", type=float, default=10, help="rounds a second; 0: no pause")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if 0 in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {0})

    listener = socket.create_server(("127.0.0.1", 0), backlog=args.sockets)
    port = listener.getsockname()[1]
    ready: Queue = Queue()  # type: ignore[type-arg]
    reader = Process(target=read_all, args=(port, args.sockets, ready))
    reader.start()
    conns = [listener.accept()[0] for _ in range(args.sockets)]
    ready.get(timeout=60)
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio sets it
    payload = b"x" * args.size

    sends = 0
    started = time.monotonic()
    before = os.times()
    next_round = started
    while time.monotonic() - started < args.seconds:
        for conn in conns:
            conn.send(payload)
        sends += len(conns)
        if args.rate:
            next_round += 1 / args.rate
            time.sleep(max(0.0, next_round - time.monotonic()))
    after = os.times()
    elapsed = time.monotonic() - started

    for conn in conns:
        conn.close()
    reader.join(timeout=60)
    user = (after.user - before.user) / sends * 1e6
    system = (after.system - before.system) / sends * 1e6
    print(
        f"{args.sockets} sockets, {args.size} bytes, "
        f"{'no pause' if not args.rate else f'{args.rate:g} rounds/s'}: "
        f"{sends / elapsed:,.0f} sends/s, {user + system:.2f} µs CPU per send "
        f"({system:.2f} kernel, {user:.2f} user), sender busy "
        f"{(after.user + after.system - before.user - before.system) / elapsed:.0%}"
    )


if __name__ == "__main__":
    main()
