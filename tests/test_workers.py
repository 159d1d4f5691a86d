"""`--workers N`: real worker processes on one port, started by the real command, against the
simulator: which worker answers, metrics counted over all of them, a killed worker replaced,
and a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.cli import settings_from
from app.demo import DemoExchange
from app.workers import MAX_WORKERS, worker_count
from tests.conftest import WAIT, RawViewer, data_dir
from tests.system import free_port

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


class Workers:
    """`python -m app --workers 2`, as a user runs it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"

    async def pids(self, tries: int = 40) -> set[int]:
        """The workers seen answering `tries` new connections."""
        seen = set()
        for _ in range(tries):
            async with httpx.AsyncClient(base_url=self.url, timeout=WAIT) as fresh:
                seen.add((await fresh.get("/healthz")).json()["worker"])
        return seen

    async def viewers(self, http: httpx.AsyncClient) -> dict[str, float]:
        """pricestream_viewers{transport="sse"} per worker, from one scrape."""
        text = (await http.get("/metrics")).text
        [family] = [
            f for f in text_string_to_metric_families(text) if f.name == "pricestream_viewers"
        ]
        return {
            s.labels["worker"]: s.value for s in family.samples if s.labels["transport"] == "sse"
        }


@pytest.fixture
async def workers(exchange: DemoExchange) -> AsyncIterator[Workers]:
    port = free_port()
    command = [
        *(sys.executable, "-m", "app", "--workers", "2", "--port", str(port)),
        *("--upstream", exchange.ws_url, "--rest", exchange.rest_url),
        *("--data-dir", data_dir(), "--log-level", "warning", "--shutdown-timeout", "1"),
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=environment)  # noqa: ASYNC220 (returns at once)
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:

            async def up() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/healthz")).is_success
                except httpx.TransportError:
                    return False

            async with asyncio.timeout(WAIT * 3):
                while not await up():
                    assert process.poll() is None, "the server exited at start-up"
                    await asyncio.sleep(0.1)
        yield Workers(process, port)
    finally:
        if process.poll() is None:
            process.terminate()  # the parent stops its workers
            try:
                process.wait(WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(WAIT)


async def test_every_worker_serves_and_metrics_count_them_all(workers: Workers) -> None:
    async with httpx.AsyncClient(base_url=workers.url, timeout=WAIT) as http:
        pids = await workers.pids()
        assert len(pids) == 2 and workers.process.pid not in pids
        viewers = [await RawViewer.open(workers.port, "/sse?symbols=BTCUSDT") for _ in range(8)]
        for viewer in viewers:
            await viewer.first_price()
        # Whichever worker answers the scrape, the sum over workers is every open viewer.
        async with asyncio.timeout(WAIT):
            while True:
                counts = [await workers.viewers(http) for _ in range(4)]
                if all(sum(c.values()) == 8 and len(c) == 2 for c in counts):
                    break
                await asyncio.sleep(0.2)
        for viewer in viewers:
            await viewer.close()


async def test_a_killed_worker_is_replaced_and_its_viewers_reconnect(workers: Workers) -> None:
    async with httpx.AsyncClient(base_url=workers.url, timeout=WAIT) as http:
        pids = await workers.pids()
        victim = min(pids)
        viewers = [await RawViewer.open(workers.port, "/sse?symbols=ETHUSDT") for _ in range(6)]
        for viewer in viewers:
            await viewer.first_price()
        os.kill(victim, signal.SIGKILL)
        # Its viewers' streams end; each reconnects after a pause (as EventSource does after
        # `retry`) and is served. A connection made while the killed process is still being
        # torn down may land in its closing socket and be reset: that one tries again.
        async with asyncio.timeout(WAIT):
            for i, viewer in enumerate(viewers):
                viewer.writer.close()
                while True:
                    try:
                        viewers[i] = await RawViewer.open(workers.port, "/sse?symbols=ETHUSDT")
                        await viewers[i].first_price()
                        break
                    except (OSError, AssertionError):  # reset, or ended before a price
                        await asyncio.sleep(0.2)
        # The parent started another worker; the dead one's metrics are gone with it.
        async with asyncio.timeout(WAIT * 2):
            while True:
                now = await workers.pids(tries=20)
                if len(now) == 2 and victim not in now:
                    break
                await asyncio.sleep(0.2)
        async with asyncio.timeout(WAIT):
            while str(victim) in await workers.viewers(http):
                await asyncio.sleep(0.2)
        for viewer in viewers:
            await viewer.close()


async def test_sigterm_stops_every_worker(workers: Workers) -> None:
    pids = await workers.pids()
    workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(workers.process.wait, WAIT) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_workers_of_a_killed_parent_stop(workers: Workers) -> None:
    """kill -9 of the parent: nobody would replace, stop or clean up after its workers."""
    pids = await workers.pids()
    workers.process.kill()
    await asyncio.to_thread(workers.process.wait, WAIT)
    async with asyncio.timeout(WAIT):
        while any(_alive(pid) for pid in pids):
            await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that is gone (init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_port_in_use_is_refused_with_a_sentence() -> None:
    """SO_REUSEPORT must not let a second server share a port that is already served."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "app", "--workers", "2", "--port", str(port)]
        command += ["--data-dir", data_dir(), "--log-level", "warning"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=WAIT * 3)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_counts() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") == min(os.cpu_count() or 1, MAX_WORKERS)
    assert worker_count(str(MAX_WORKERS + 10)) == MAX_WORKERS  # Binance's per-IP limits
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            settings_from(["--workers", bad], {})
