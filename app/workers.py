"""`--workers N`: several processes serving one port, each a whole pricestream, and the parent
that starts them, replaces any that dies, and stops them.

Each worker binds the port itself with SO_REUSEPORT, so the kernel spreads new connections
evenly over the workers by their address hash. A stream lives for hours on the worker that
accepted it; with one listening socket shared by all (uvicorn's `--workers`), whichever worker
wakes first takes the connection, and a busy worker keeps taking more. The parent holds the
port bound (not listening, so it gets no connections) to learn it when asked for port 0 and to
keep it while a worker restarts.

Each worker has its own upstream connection to Binance (its own hub, own viewers), so N workers
make N times the connection attempts after an outage: `MAX_WORKERS` keeps that far below
Binance's 300 attempts per 5 minutes per IP (README, "Several processes"). Workers share
nothing at run time but a folder where each leaves its metrics for the others
(`app.metrics.WorkerShare`), so that /metrics counts them all whichever one answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from types import FrameType

from app.config import Settings

logger = logging.getLogger(__name__)

# One worker's reconnects stay under 15 attempts per 5 minutes per upstream connection
# (tests/test_faults.py); 8 workers of up to two connections each stay under half of 300.
MAX_WORKERS = 8
# A worker that dies this soon after starting, this many times in a row, will die again: stop.
EARLY_DEATH = 5.0
EARLY_DEATHS_TO_GIVE_UP = 5
# Seconds the parent waits between checks on its workers.
WATCH_INTERVAL = 0.2
# How often (seconds) a worker checks that its parent is still there.
ORPHAN_CHECK = 0.5
# Beyond the workers' own graceful shutdown, how long before they are killed.
STOP_MARGIN = 5.0
_spawn = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Worker:
    """What a worker process knows of its place: its number, the folder it shares, and
    whether `--demo`'s simulated exchange runs in the parent (one market for every worker)."""

    index: int
    share: str
    shared_demo: bool = False


class _DemoThread:
    """With `--demo` and several workers: one simulated exchange, in a thread of the parent,
    so that every worker shows the same (simulated) market."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.urls: tuple[str, str] = ("", "")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="demo-exchange", daemon=True)

    def __enter__(self) -> tuple[str, str]:
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the demo exchange did not start")
        return self.urls

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        from app.demo import DemoExchange

        async def serve() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            async with DemoExchange() as exchange:
                self.urls = (exchange.ws_url, exchange.rest_url)
                self.ready.set()
                await self._stop.wait()

        asyncio.run(serve())


def worker_count(setting: str) -> int:
    """`--workers`: a number, or `auto` for one per core; at most MAX_WORKERS."""
    wanted = (os.cpu_count() or 1) if setting == "auto" else int(setting)
    if wanted > MAX_WORKERS:
        logger.warning(
            "workers: %d asked for, %d started (each has its own Binance connection; see "
            "the README on Binance's per-IP limits)",
            wanted,
            MAX_WORKERS,
        )
    return min(wanted, MAX_WORKERS)


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """The parent of `count` workers: `run()` returns when they have all stopped."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.workers: list[tuple[SpawnProcess, float]] = []  # with the time each started
        self.stopping = False
        self.early_deaths = 0

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM; the exit status (1 if workers kept dying, 2 if the
        port cannot be had)."""
        try:
            holder = self._bind()
        except OSError as exc:
            logger.error(
                "cannot listen on %s:%d: %s", self.settings.host, self.settings.port, exc.strerror
            )
            return 2
        port = holder.getsockname()[1]
        settings = self.settings.replace(port=port)
        share = tempfile.mkdtemp(prefix="pricestream-workers-")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        logger.info("serving http://%s:%d from %d workers", settings.host, port, self.count)
        status = 0
        with contextlib.ExitStack() as stack:
            stack.callback(holder.close)
            stack.callback(shutil.rmtree, share, ignore_errors=True)
            if settings.demo:
                upstream, rest = stack.enter_context(_DemoThread())
                settings = settings.replace(upstream=upstream, rest=rest)
                logger.warning(
                    "DEMO mode: prices are simulated by a local exchange at %s", upstream
                )
            stack.callback(self._stop_all)
            self.workers = [
                self._start(settings, Worker(i, share, settings.demo)) for i in range(self.count)
            ]
            while not self.stopping:
                time.sleep(WATCH_INTERVAL)
                if not self._replace_dead(settings, share):
                    status = 1
                    break
        return status

    def _bind(self) -> socket.socket:
        """The port, held for the workers (bound, not listening)."""
        host, port = self.settings.host, self.settings.port
        if port:
            # Refused, as any server's bind would be, if something already serves this port
            # (another pricestream included): SO_REUSEPORT alone would share it with them.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
                probe.bind((host, port))
        return shared_port_socket(host, port)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _start(self, settings: Settings, worker: Worker) -> tuple[SpawnProcess, float]:
        process = _spawn.Process(
            target=serve_worker, args=(settings, worker), name=f"pricestream-worker-{worker.index}"
        )
        process.start()
        return process, time.monotonic()

    def _replace_dead(self, settings: Settings, share: str) -> bool:
        """Start a new worker for each that died; False if they keep dying at start-up."""
        for index, (process, started) in enumerate(self.workers):
            if process.is_alive() or self.stopping:
                continue
            lived = time.monotonic() - started
            logger.error(
                "worker %d (pid %s) died with status %s after %.0f s; starting another",
                index,
                process.pid,
                process.exitcode,
                lived,
            )
            forget_worker(share, process.pid)
            self.early_deaths = self.early_deaths + 1 if lived < EARLY_DEATH else 0
            if self.early_deaths >= EARLY_DEATHS_TO_GIVE_UP:
                logger.error("workers die as they start; stopping (see the errors above)")
                return False
            self.workers[index] = self._start(settings, Worker(index, share, settings.demo))
        return True

    def _stop_all(self) -> None:
        # Shutdown order: ask every worker to stop (each ends its streams and closes its
        # WebSockets with 1001, as a single server does), wait for them, then kill stragglers.
        for process, _ in self.workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        # A worker may wait out the timeout twice: for its WebSocket clients' closes, then for
        # uvicorn's open connections.
        deadline = time.monotonic() + 2 * self.settings.shutdown_timeout + STOP_MARGIN
        for process, _ in self.workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("worker pid %s did not stop in time; killed", process.pid)
                process.kill()
                process.join()


def _stop_when_orphaned(parent: int) -> None:
    """A worker whose parent is gone (killed with SIGKILL, say) stops as if told to: nobody
    would replace it, stop it or clean up after it. Checked from a thread, because the event
    loop may be busy for a while and a signal is what uvicorn's shutdown listens for."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK)
        logger.warning("worker %d: the parent process is gone; stopping", os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def forget_worker(share: str, pid: int | None) -> None:
    """A dead worker's metrics leave the shared folder (its counters end with it)."""
    if pid is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(shared_metrics_path(share, pid))


def shared_metrics_path(share: str, pid: int) -> str:
    """Where worker `pid` leaves its metrics for the others."""
    return os.path.join(share, f"{pid}.prom")


def serve_worker(settings: Settings, worker: Worker) -> None:
    """A worker process: one whole pricestream on the shared port."""
    # Imported here: the parent needs none of the server, and a spawned child imports afresh.
    from app.application import create_app, drain
    from app.cli import configure_logging
    from app.server import Server, raise_open_files_limit, uvicorn_config

    configure_logging(settings)
    raise_open_files_limit(settings)
    _stop_when_orphaned(os.getppid())
    sock = shared_port_socket(settings.host, settings.port)
    app = create_app(settings, worker)
    config = uvicorn_config(app, settings)
    try:
        Server(config, before_shutdown=lambda: drain(app)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the parent reports the stop
    finally:
        sock.close()
    sys.exit(0)
