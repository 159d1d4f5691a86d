"""The one REST client: Binance's request-weight rules kept, answers shared and cached.

Every REST call the server makes (the symbol list, chart history, the first trades) goes through
one `Rest`, owned by the lifespan. It reads Binance's weight header, and on a 429 (rate limit) or
418 (an IP ban for ignoring 429s) it stops calling altogether until `Retry-After` has passed,
refusing locally in the meantime, and says so in /healthz: hammering on is how an IP gets banned
for days. `cached` makes one call serve everyone: concurrent askers share one request in flight,
and the answer is kept for its lifetime. It knows nothing of panels or HTML.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Any, NamedTuple

import httpx

from app.config import Settings

logger = logging.getLogger(__name__)

# How long one REST call may take, whole, before it counts as failed.
TIMEOUT = 10.0
# Without Retry-After: a 429 waits a minute (Binance's weight window), a 418 ban two minutes,
# the shortest ban Binance hands out.
COOL_DOWN = {429: 60.0, 418: 120.0}
# Answers kept at most, oldest dropped first (a few per watched symbol).
CACHE_ENTRIES = 512

_Key = tuple[str, tuple[tuple[str, str], ...]]


class Answer(NamedTuple):
    """A REST answer and when Binance gave it (epoch ms): a cached answer is that old."""

    body: bytes
    fetched_ms: int


class RestError(Exception):
    """A REST call that gave no usable answer; the message is a sentence for logs and pages."""


class Rest:
    """Binance's REST API at `settings.rest`. Use as `async with Rest(settings) as rest:`."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.rest.rstrip("/")
        self.client = httpx.AsyncClient(
            follow_redirects=True, headers={"User-Agent": "pricestream"}
        )
        self.calls: Counter[str] = Counter()  # requests sent, per path
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (path, HTTP status or error)
        self.cache_hits = 0
        self.used_weight: int | None = None  # Binance's X-MBX-USED-WEIGHT-1M, last seen
        self.cooling_until: float | None = None  # monotonic; no calls before it
        self.last_error: str | None = None
        self._cache: OrderedDict[_Key, tuple[float, Answer]] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Task[Answer]] = {}

    async def __aenter__(self) -> Rest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Shutdown order: cancel the calls in flight (their askers get CancelledError or have
        # gone), then close the connection pool.
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their outcome was retrieved by _retrieve
        await self.client.aclose()

    def cooling_down(self) -> float:
        """Seconds left before we may call Binance again (0 when we may)."""
        if self.cooling_until is None:
            return 0.0
        left = self.cooling_until - time.monotonic()
        if left <= 0:
            self.cooling_until = None
            return 0.0
        return left

    async def get(
        self, path: str, params: dict[str, str] | None = None, time_limit: float = TIMEOUT
    ) -> bytes:
        """One call, now: the body of a 200, or RestError saying why not."""
        wait = self.cooling_down()
        if wait:
            raise RestError(f"Binance asked us to slow down; no REST calls for {wait:.0f} s more")
        url = self.base + path
        self.calls[path] += 1
        try:
            async with asyncio.timeout(time_limit):
                response = await self.client.get(url, params=params)
                body = await response.aread()
        except TimeoutError:
            self.outcomes[path, "timeout"] += 1
            raise self._failed(f"{path}: no answer within {time_limit:g} s") from None
        except httpx.HTTPError as exc:
            self.outcomes[path, "error"] += 1
            raise self._failed(f"{path}: {type(exc).__name__}: {exc}") from None
        weight = response.headers.get("x-mbx-used-weight-1m", "")
        if weight.isdigit():
            self.used_weight = int(weight)
        status = response.status_code
        self.outcomes[path, str(status)] += 1
        if status in COOL_DOWN:
            retry_after = response.headers.get("retry-after", "")
            pause = float(retry_after) if retry_after.isdigit() else COOL_DOWN[status]
            self.cooling_until = time.monotonic() + pause
            what = "banned this address" if status == 418 else "rate-limited us"
            logger.warning(
                "REST: Binance %s (HTTP %d on %s); no REST calls for %.0f s",
                what,
                status,
                path,
                pause,
            )
            raise self._failed(f"HTTP {status}: Binance {what}; pausing REST for {pause:.0f} s")
        if status != 200:
            raise self._failed(f"{path}: HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.last_error = None
        return body

    async def cached(
        self, path: str, params: dict[str, str], ttl: float, *, fresh: bool = False
    ) -> Answer:
        """The answer to `path?params`, from the cache if younger than `ttl` seconds (never with
        `fresh`); askers at the same time share one request (a fresh asker joins one already
        in flight: it was sent after whatever made the asker want a fresh answer)."""
        key = _key(path, params)
        hit = None if fresh else self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            self.cache_hits += 1
            return hit[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key, ttl), name=f"rest {path}")
            # Retrieved here too, so a failure whose askers have all gone is not reported as
            # "never retrieved"; it was logged and counted already.
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        else:
            self.cache_hits += 1
        # Shielded: one asker leaving (its viewer closed the page) must not cancel the call
        # for the others. The task is ours, and __aexit__ cancels it.
        return await asyncio.shield(task)

    def forget(self, path: str, params: dict[str, str]) -> None:
        """Drop a cached answer its asker could not use, so the next ask fetches anew."""
        self._cache.pop(_key(path, params), None)

    async def _fetch(self, key: _Key, ttl: float) -> Answer:
        try:
            answer = Answer(await self.get(key[0], dict(key[1])), time.time_ns() // 1_000_000)
        finally:
            del self._inflight[key]
        self._cache[key] = (time.monotonic() + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return answer

    def _failed(self, message: str) -> RestError:
        self.last_error = message
        return RestError(message)

    def health(self) -> dict[str, Any]:
        return {
            "url": self.base,
            "calls": dict(self.calls),
            "cache_hits": self.cache_hits,
            "used_weight_1m": self.used_weight,
            "cooling_down_s": round(self.cooling_down(), 1),
            "last_error": self.last_error,
        }


def _key(path: str, params: dict[str, str]) -> _Key:
    return (path, tuple(sorted(params.items())))


def _retrieve(task: asyncio.Task[Answer]) -> None:
    if not task.cancelled():
        task.exception()
