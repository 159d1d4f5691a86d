"""Webhook delivery: every committed firing reaches its target at least once, across restarts.

Deliveries live in the store, so a restart finds the pending ones. Each attempt POSTs
`{"alert": ..., "delivery_id": ...}` with `Idempotency-Key: <delivery_id>` (the same key on
every retry of one firing), waits at most `--webhook-timeout`, and counts only a 2xx as done.
Otherwise it is tried again, 2 s after the first failure and doubling to an hour, until it
succeeds or is older than `--webhook-give-up` (then marked failed, and shown as failed). One
task, woken when a firing is committed and otherwise asleep until the next retry is due.

Several servers may share the database: a server attempts a delivery only after claiming it in
the store for twice `--webhook-timeout` and a second (an attempt is cut at `--webhook-timeout`),
so no two servers attempt one firing at once, and a delivery whose server died is taken over by
another once the claim lapses. While the database cannot be reached, nothing is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx

from app.config import Settings
from app.store import Alert, Delivery, Store, StoreDown

logger = logging.getLogger(__name__)

RETRY_FIRST = 2.0
RETRY_MAX = 3600.0
# Deliveries attempted at once; more wait for the next round.
BATCH = 20
# Longest sleep between looks at the store, in case a wake-up was missed.
IDLE_LOOK = 60.0
# While the database cannot be reached, look again this often (seconds).
DOWN_LOOK = 1.0
# A claim lasts twice the attempt's limit plus this: time for claiming, recording the outcome,
# and clocks of servers that differ a little.
CLAIM_SLACK = 1.0


def private_address(host: str) -> bool:
    """Loopback, private, link-local or otherwise internal: not the public internet."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower() in ("localhost", "localhost.localdomain")
    return not address.is_global


class Deliverer:
    """Delivers pending webhooks. `async with Deliverer(...)` runs it; `wake()` after a firing."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout,
            follow_redirects=False,  # a redirect is the target's answer, not a new target
            headers={"User-Agent": "pricestream-webhooks"},
        )
        self.attempts = 0
        self.delivered = 0
        # Who holds a claim: unique per process, readable in the database.
        self.claimant = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claim_for = 2 * settings.webhook_timeout + CLAIM_SLACK
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Deliverer:
        self._task = asyncio.create_task(self._run(), name="webhooks")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Shutdown order: stop delivering (an attempt cut short is retried after a restart
        # with the same key), then close the connection pool.
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self.client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                sleep = await self._round()
            except StoreDown:
                sleep = DOWN_LOOK  # the store logged it; deliveries wait in the database
            if sleep == 0:
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(sleep, IDLE_LOOK)):
                    await self._wake.wait()

    async def _round(self) -> float:
        """Attempt what is due and ours to claim; how long to sleep before the next round."""
        now = time.time()
        due = await self.store.claim_deliveries(self.claimant, now, now + self.claim_for, BATCH)
        if due:
            await asyncio.gather(*(self._attempt(d, a) for d, a in due))
            return 0
        # Due next, or a claim of another server lapses (it may have died holding it).
        next_at = await self.store.next_delivery_at()
        return IDLE_LOOK if next_at is None else max(0.0, next_at - time.time()) + 0.01

    async def _attempt(self, delivery: Delivery, alert: Alert) -> None:
        self.attempts += 1
        error = await self._post(delivery, alert)
        now = time.time()
        try:
            await self._record(delivery, alert, error, now)
        except StoreDown:
            # The outcome is lost with the connection; the claim lapses and the delivery is
            # attempted again with the same key (at least once).
            return

    async def _record(
        self, delivery: Delivery, alert: Alert, error: str | None, now: float
    ) -> None:
        if error is None:
            self.delivered += 1
            await self.store.delivered(delivery.id, now)
            logger.info("webhook %s for alert %s delivered", delivery.id, alert.id)
            return
        if now - delivery.created_at > self.settings.webhook_give_up:
            await self.store.give_up(delivery.id, self.claimant, error)
            logger.warning(
                "webhook %s for alert %s failed for good after %d attempts: %s",
                delivery.id,
                alert.id,
                delivery.attempts + 1,
                error,
            )
            return
        delay = min(RETRY_FIRST * 2**delivery.attempts, RETRY_MAX)
        await self.store.retry_later(delivery.id, self.claimant, now + delay, error)
        logger.info("webhook %s: %s; trying again in %.0f s", delivery.id, error, delay)

    async def _post(self, delivery: Delivery, alert: Alert) -> str | None:
        """One attempt; None if the target took it (2xx), else what went wrong. It ends within
        `--webhook-timeout` in all (httpx's timeout is per step), well inside the claim."""
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                return await self._post_once(delivery, alert)
        except TimeoutError:
            return f"no answer within {self.settings.webhook_timeout:g} s"

    async def _post_once(self, delivery: Delivery, alert: Alert) -> str | None:
        host = urlsplit(delivery.url).hostname or ""
        if self.settings.webhook_forbid_private:
            try:
                found = await asyncio.get_running_loop().getaddrinfo(host, None)
            except OSError as exc:
                return f"cannot resolve {host!r}: {exc}"
            # Checked at each attempt, not only when the alert was made: a name may be pointed
            # at an internal address later (DNS rebinding).
            if any(private_address(str(info[4][0])) for info in found):
                return f"{host!r} resolves to an internal address (--webhook-forbid-private)"
        body = {"alert": alert.as_json(), "delivery_id": delivery.id}
        try:
            response = await self.client.post(
                delivery.url, json=body, headers={"Idempotency-Key": delivery.id}
            )
        except httpx.TimeoutException:
            return f"no answer within {self.settings.webhook_timeout:g} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
