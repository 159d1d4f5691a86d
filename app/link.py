"""One upstream WebSocket (a link): read frames, pace control messages, watch for silence.

A `Link` brings its connection's subscriptions to what its owner (a shard of `app.binance`)
wants, in batches no faster than `control_rate`; decodes every frame with `app.market` and hands
data to the owner; and raises `StallError` when the connection stays open but goes silent. It
decides nothing about reconnecting: that is the owner's job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Protocol

from websockets.asyncio.client import ClientConnection

from app.config import Settings
from app.market import Message, ParseError, Reply, ServerShutdown, parse

logger = logging.getLogger(__name__)

# Binance drops a SUBSCRIBE frame over ~8 KB silently; 200 names
# of up to ~30 characters stay well below it.
NAMES_PER_MESSAGE = 200
# UI-driven changes arrive in bursts (a page asks for 5 symbols at once); wait this long so they
# leave as one SUBSCRIBE.
DEBOUNCE = 0.05
# A SUBSCRIBE that Binance answered with an error is tried again after this many first-backoff
# delays (5 s by default): soon enough to heal, slow enough to stay far below 5 messages a second.
RESUBSCRIBE_BACKOFFS = 5
# Streams Binance sends every second whatever the market does;
# silence on one of them, while the link carries other data, means the subscription is stuck.
STEADY_STREAMS = ("@ticker", "@miniTicker")


class StallError(Exception):
    """The link stayed open but delivered no data for `stall_timeout` seconds."""


class LinkOwner(Protocol):
    """What a link needs from the shard that owns it."""

    name: str
    settings: Settings
    wanted: set[str]
    rotate_after: float

    def delivering(self) -> None: ...
    def deliver(self, message: Message, raw: str | bytes) -> None: ...
    def bad_frame(self, exc: ParseError, raw: str | bytes) -> None: ...
    def note_error(self, message: str) -> None: ...
    def note_resubscribes(self, count: int) -> None: ...
    def next_id(self) -> int: ...


class Pacer:
    """Spaces control messages at least `1/rate` seconds apart (Binance counts them: 5/s)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_slot = 0.0
        self._lock = asyncio.Lock()  # two tasks of one link may send; they take turns

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self.next_slot > now:
                await asyncio.sleep(self.next_slot - now)
            # Measured from when we actually go, not from the plan: a late send must not let
            # the next one follow it too closely.
            self.next_slot = time.monotonic() + self.interval


class Link:
    """One open WebSocket: reads frames, reconciles subscriptions, and watches for silence."""

    def __init__(self, ws: ClientConnection, shard: LinkOwner) -> None:
        self.ws = ws
        self.shard = shard
        self.settings = shard.settings
        self.sent: set[str] = set()  # streams SUBSCRIBEd on this link (reply pending or ok)
        self.pending: dict[int, tuple[str, list[str]]] = {}
        self.changed = asyncio.Event()
        self.changed.set()
        self.first_data = asyncio.Event()
        self.notice = asyncio.Event()  # serverShutdown received
        self.opened = time.monotonic()
        self.rotate_at = self.opened + shard.rotate_after
        self.last_data = self.opened
        self.stream_seen: dict[str, float] = {}  # stream -> last data, or when it was subscribed
        self.retry_failed_at: float | None = None
        self.pacer = Pacer(self.settings.control_rate)

    async def run(self) -> None:
        """Serve until the connection ends; raises what ended it (ConnectionClosed, StallError)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sync())
            tg.create_task(self._watch())
            await self._read()

    async def aclose(self) -> None:
        await self.ws.close()

    async def _read(self) -> None:
        while True:
            # recv() rather than `async for`: it raises ConnectionClosed even on a clean close,
            # carrying the close code that decides how soon to reconnect.
            raw = await self.ws.recv()
            try:
                item = parse(raw)
            except ParseError as exc:
                self.shard.bad_frame(exc, raw)
                continue
            if isinstance(item, Reply):
                self._on_reply(item)
            elif isinstance(item.payload, ServerShutdown):
                logger.info("upstream %s: serverShutdown notice, rotating", self.shard.name)
                self.rotate_at = time.monotonic()
                self.notice.set()
            else:
                self.last_data = time.monotonic()
                if item.stream is not None:
                    self.stream_seen[item.stream] = self.last_data
                if not self.first_data.is_set():
                    self.first_data.set()
                    self.shard.delivering()
                self.shard.deliver(item, raw)

    def _on_reply(self, reply: Reply) -> None:
        request = self.pending.pop(reply.id, None) if isinstance(reply.id, int) else None
        if request is None:
            logger.debug("upstream %s: reply to unknown id %r", self.shard.name, reply.id)
            return
        method, names = request
        if reply.error_code is not None:
            logger.warning(
                "upstream %s: %s of %d streams failed: code %s %s",
                self.shard.name,
                method,
                len(names),
                reply.error_code,
                reply.error_msg,
            )
            self.shard.note_error(f"{method} failed: {reply.error_msg}")
            if method == "SUBSCRIBE":
                # Forget them, so the sync loop asks again after a pause.
                self.sent.difference_update(names)
                self.retry_failed_at = time.monotonic()
                self.changed.set()

    async def _sync(self) -> None:
        """Bring this link's subscriptions to the shard's wanted set, in paced batches."""
        while True:
            await self.changed.wait()
            self.changed.clear()
            if self.retry_failed_at is not None:
                retry_at = (
                    self.retry_failed_at + self.settings.backoff_initial * RESUBSCRIBE_BACKOFFS
                )
                self.retry_failed_at = None
                await asyncio.sleep(max(0.0, retry_at - time.monotonic()))
            await asyncio.sleep(DEBOUNCE)
            wanted = self.shard.wanted
            for method, names in (
                ("UNSUBSCRIBE", self.sent - wanted),
                ("SUBSCRIBE", wanted - self.sent),
            ):
                ordered = sorted(names)
                for i in range(0, len(ordered), NAMES_PER_MESSAGE):
                    await self._send(method, ordered[i : i + NAMES_PER_MESSAGE])

    async def _send(self, method: str, names: list[str]) -> None:
        """Send one control message, paced: every one counts against Binance's 5 a second."""
        await self.pacer.wait()
        rid = self.shard.next_id()
        self.pending[rid] = (method, names)
        now = time.monotonic()
        if method == "SUBSCRIBE":
            if not self.sent:
                # Silence is measured from when we first asked for something.
                self.last_data = now
            self.sent.update(names)
            self.stream_seen.update(dict.fromkeys(names, now))
        else:
            self.sent.difference_update(names)
            for name in names:
                self.stream_seen.pop(name, None)
        logger.debug("upstream %s: %s %s", self.shard.name, method, names)
        await self.ws.send(json.dumps({"method": method, "params": names, "id": rid}))

    async def _watch(self) -> None:
        """Replace a link that is open but silent (pings alone do not prove data flows), and
        resubscribe a once-a-second stream that went quiet while the rest of the link flows."""
        limit = self.settings.stall_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            if self.sent and now - self.last_data > limit:
                raise StallError(f"no data for {limit:g} s")
            stuck = [
                s
                for s, seen in self.stream_seen.items()
                if now - seen > limit and s.endswith(STEADY_STREAMS)
            ]
            if stuck:
                logger.warning(
                    "upstream %s: %s silent for %g s while others flow; resubscribing",
                    self.shard.name,
                    ", ".join(sorted(stuck)),
                    limit,
                )
                self.shard.note_resubscribes(len(stuck))
                # Forget them, so the sync loop unsubscribes nothing and subscribes them anew.
                for name in stuck:
                    self.stream_seen[name] = now
                await self._send("UNSUBSCRIBE", sorted(stuck))
                self.changed.set()
