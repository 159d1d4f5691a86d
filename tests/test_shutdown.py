"""SIGTERM with hundreds of open streams: the real command exits promptly and closes upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import httpx
import pytest

from app.demo import DemoExchange
from tests.conftest import WAIT, RawViewer, data_dir
from tests.system import free_port

pytestmark = pytest.mark.anyio
VIEWERS = 500


async def test_sigterm_with_500_viewers_exits_fast_and_clean() -> None:
    async with DemoExchange(trades_per_second=5, ticker_interval=1.0) as ex:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRICESTREAM_")}
        env["PRICESTREAM_DATA_DIR"] = data_dir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "--port",
            str(port),
            "--upstream",
            ex.ws_url,
            "--rest",
            ex.rest_url,
            "--max-streams-per-client",
            "1000",
            "--log-level",
            "warning",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=2) as http, asyncio.timeout(WAIT):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            viewers = []
            for _ in range(VIEWERS // 100):  # connect in batches, as tabs would
                batch = await asyncio.gather(
                    *(RawViewer.open(port, "/sse?symbols=BTCUSDT,ETHUSDT") for _ in range(100))
                )
                await asyncio.gather(*(v.first_price() for v in batch))
                viewers.extend(batch)
            assert len(ex.peers) == 1
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                output, _ = await proc.communicate()
            elapsed = time.monotonic() - started
            for v in viewers:
                await v.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = output.decode()
        # uvicorn shuts down, then lets SIGTERM end the process as it would have (supervisors
        # read that as a clean stop).
        assert proc.returncode == -signal.SIGTERM, text
        assert elapsed < 3.0, f"SIGTERM with {VIEWERS} viewers took {elapsed:.2f} s"
        assert "Traceback" not in text, text
        # The upstream connection was closed by us, with a normal close, not dropped.
        async with asyncio.timeout(WAIT):
            while not ex.close_codes:
                await asyncio.sleep(0.05)
        assert ex.close_codes == [1000]
