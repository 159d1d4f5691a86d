"""The upstream client: Binance's combined market streams, kept alive and kept honest.

`Upstream` owns the set of streams the hub wants and spreads it over shards of at most
`streams_per_connection` streams. Each `_Shard` keeps one connection (a `Link`) open to
`{upstream}/stream`: it reconnects with capped, jittered exponential backoff, resubscribes
everything on a new link in paced batches, replaces a link that goes silent, and rotates a link
before Binance's 24 h cut or on its `serverShutdown` notice, opening the new link before closing
the old one. What happens on one open connection (reading, pacing, silence) is `app.link`'s.
Events go to the hub through a plain callback that must not block. Nothing here knows about
HTML or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from app.config import Settings
from app.link import Link, StallError
from app.market import Message, ParseError

logger = logging.getLogger(__name__)

# A replacement link (rotation) must deliver data within this time, or we cut over anyway.
ROTATION_READY_TIMEOUT = 10.0
# Failures in a row after which the state reads "down" rather than "reconnecting".
DOWN_AFTER_FAILURES = 3


class State(StrEnum):
    IDLE = "idle"  # nothing wanted, so no connection
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    DOWN = "down"


def stream_url(base: str) -> str:
    """`{base}/stream`, also when the base was given with a trailing `/`, `/ws` or `/stream`."""
    base = base.rstrip("/")
    for suffix in ("/ws", "/stream"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base + "/stream"


def retry_delay(exc: BaseException, failures: int, settings: Settings) -> tuple[float, str]:
    """Decide how long to wait before the next attempt after `exc`, and say why, in one place.

    Nothing is fatal: a price board that gives up is a dead board. A refusal that will not change
    soon (451 restricted location, 403 WAF, 418/429 rate limit) waits the longest delay, or what
    `Retry-After` asks; everything else backs off exponentially from `backoff_initial`.
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 451:
            return settings.backoff_max, (
                "HTTP 451: Binance refuses connections from this location; for Binance.US use "
                "--upstream wss://stream.binance.us:9443 --rest https://api.binance.us"
            )
        if status in (403, 418, 429):
            retry_after = exc.response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.isdigit() else settings.backoff_max
            return max(wait, settings.backoff_initial), f"HTTP {status}: rate limited or blocked"
        reason = f"HTTP {status} on connect"
    elif isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd else 1006
        if code == 1001 and failures == 0:
            return 0.0, "closed 1001 (going away): reconnecting at once"
        reason = f"closed {code} {exc.rcvd.reason if exc.rcvd else ''}".strip()
    elif isinstance(exc, StallError):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    ceiling = min(settings.backoff_max, settings.backoff_initial * 2**failures)
    # "Equal jitter": never less than half the step, so a storm of clients spreads out but still
    # backs off.
    return ceiling / 2 + random.uniform(0, ceiling / 2), reason


class _Shard:
    """Up to `streams_per_connection` streams on one connection, kept alive while wanted."""

    def __init__(self, name: str, upstream: Upstream) -> None:
        self.name = name
        self.upstream = upstream
        self.settings = upstream.settings
        self.url = stream_url(self.settings.upstream)
        self.wanted: set[str] = set()
        self.state = State.IDLE
        self.failures = 0
        self.links: dict[Link, asyncio.Task[None]] = {}  # two only while rotating
        self.connected_since: float | None = None
        # Spread rotations so that many shards (or servers) do not all reconnect in one second.
        self.rotate_after = self.settings.rotate_after * random.uniform(0.95, 1.0)
        self._wake = asyncio.Event()

    def set_wanted(self, streams: set[str]) -> None:
        self.wanted = streams
        self._wake.set()
        for link in self.links:
            link.changed.set()

    # -- what its links report (app.link.LinkOwner) ---------------------------------------------

    def delivering(self) -> None:
        """A link's first data frame: it works, so failures count from zero again."""
        self.failures = 0
        self._set_state(State.LIVE)

    def deliver(self, message: Message, raw: str | bytes) -> None:
        self.upstream.deliver(message, raw)

    def bad_frame(self, exc: ParseError, raw: str | bytes) -> None:
        self.upstream.bad_frame(exc, raw)

    def note_error(self, message: str) -> None:
        self.upstream.note_error(message)

    def note_resubscribes(self, count: int) -> None:
        self.upstream.resubscribes += count

    def next_id(self) -> int:
        return next(self.upstream.ids)

    def _set_state(self, state: State) -> None:
        if state != self.state:
            logger.info("upstream %s: %s", self.name, state)
            self.state = state
            self.upstream.state_changed()

    async def run(self) -> None:
        """Keep a link open while anything is wanted: reconnect, rotate, close when unwanted."""
        current: tuple[Link, asyncio.Task[None]] | None = None
        try:
            while True:
                if not self.wanted:
                    if current is not None:
                        await self._stop(*current)
                        current = None
                    self._set_state(State.IDLE)
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if current is None:
                    if self.state == State.IDLE:
                        self._set_state(State.CONNECTING)
                    try:
                        current = self._start(await self._connect())
                    except (OSError, TimeoutError, InvalidHandshake) as exc:
                        await self._back_off(exc)
                    continue
                outcome = await self._watch(*current)
                if outcome == "rotate":
                    current = await self._rotate(*current)
                elif outcome == "ended":
                    link, task = current
                    current = None
                    await self._back_off(await self._stop(link, task))
        finally:
            # Cancelled (shutdown): stop every link's task, then close its socket politely.
            for link, task in list(self.links.items()):
                task.cancel()
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved: it ended the way every link ends
                with contextlib.suppress(OSError, ConnectionClosed):
                    await link.aclose()

    async def _connect(self) -> Link:
        ws = await connect(
            self.url,
            open_timeout=10,
            close_timeout=2,
            ping_interval=self.settings.upstream_ping,
            ping_timeout=self.settings.upstream_ping,
            max_size=2**22,
            # The reader hands frames straight to the hub, so this queue only fills if the
            # process is starved; buffering then beats dropping the link.
            max_queue=4096,
        )
        logger.info("upstream %s: connected to %s", self.name, self.url)
        return Link(ws, self)

    def _start(self, link: Link) -> tuple[Link, asyncio.Task[None]]:
        if self.connected_since is None:
            self.connected_since = time.time()
        task = asyncio.create_task(link.run(), name=f"upstream-{self.name}")
        self.links[link] = task
        return link, task

    async def _stop(self, link: Link, task: asyncio.Task[None]) -> BaseException:
        """Cancel `link`'s task, close its socket, and return what had ended it (if anything)."""
        del self.links[link]
        if not self.links:
            self.connected_since = None
        if not task.done():
            task.cancel()
        ended: BaseException = ConnectionClosed(None, None)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we ourselves are being stopped, not just the link
        except Exception as exc:
            # This loop is what keeps the board alive, so even a bug in a link (not just a
            # network fault) ends in a reconnect, loudly logged, never in a dead feed.
            ended = _leaf(exc)
            if not isinstance(ended, ConnectionClosed | StallError | OSError | TimeoutError):
                logger.error("upstream %s: link failed unexpectedly", self.name, exc_info=ended)
        with contextlib.suppress(OSError, ConnectionClosed):
            await link.aclose()
        return ended

    async def _back_off(self, exc: BaseException) -> None:
        delay, why = retry_delay(exc, self.failures, self.settings)
        self.failures += 1
        self.upstream.reconnects += 1
        self.upstream.note_error(why)
        refused = isinstance(exc, InvalidStatus) and exc.response.status_code in (403, 451)
        down = refused or self.failures >= DOWN_AFTER_FAILURES
        self._set_state(State.DOWN if down else State.RECONNECTING)
        logger.warning("upstream %s: %s; reconnecting in %.1f s", self.name, why, delay)
        await asyncio.sleep(delay)

    async def _watch(self, link: Link, task: asyncio.Task[None]) -> str:
        """Wait until the link ends ("ended"), is due for rotation ("rotate"), or is unwanted."""
        waiters = {
            "notice": asyncio.create_task(link.notice.wait()),
            "wake": asyncio.create_task(self._wake.wait()),
        }
        try:
            while True:
                pending = [task, *(w for w in waiters.values() if not w.done())]
                await asyncio.wait(
                    pending,
                    timeout=max(0.0, link.rotate_at - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if task.done():
                    return "ended"
                if time.monotonic() >= link.rotate_at:
                    return "rotate"
                if waiters["wake"].done():
                    self._wake.clear()
                    if not self.wanted:
                        return "unwanted"
                    waiters["wake"] = asyncio.create_task(self._wake.wait())
        finally:
            for waiter in waiters.values():
                waiter.cancel()

    async def _rotate(
        self, old: Link, old_task: asyncio.Task[None]
    ) -> tuple[Link, asyncio.Task[None]]:
        """Open a successor, let it start delivering, then close `old`: no gap a viewer sees."""
        try:
            new, new_task = self._start(await self._connect())
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            # The old link still works; try again shortly rather than dropping it.
            logger.warning("upstream %s: rotation failed, keeping the old link: %s", self.name, exc)
            old.rotate_at = time.monotonic() + max(self.settings.backoff_initial, 5.0)
            old.notice.clear()
            return old, old_task
        ready = asyncio.create_task(new.first_data.wait())
        try:
            await asyncio.wait(
                [new_task, ready],
                timeout=ROTATION_READY_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        await self._stop(old, old_task)
        self.upstream.rotations += 1
        logger.info("upstream %s: rotated to a new connection", self.name)
        return new, new_task


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@dataclass
class ShardStatus:
    name: str
    state: State
    streams: int
    failures: int
    connected_since: float | None


class Upstream:
    """The wanted streams, reference-counted and spread over shards; events out through
    `deliver`. Two panels that share a stream each `want` it, and it stays subscribed until
    both have let it go.

    Args:
        on_event: called for every decoded data message, on the event loop; must not block.
        on_state: called when the aggregate state changes.
    """

    def __init__(
        self,
        settings: Settings,
        on_event: Callable[[Message], None],
        on_state: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.on_state = on_state
        self.ids = itertools.count(1)
        self.shards: list[_Shard] = []
        self.reconnects = 0
        self.rotations = 0
        self.resubscribes = 0
        self.bad_frames = 0
        self.messages = 0  # data messages delivered
        self.last_raw: dict[str, str | bytes] = {}  # stream -> its last message, as sent
        self.last_error: str | None = None
        self.last_message: float | None = None  # monotonic time of the last data frame
        self._assigned: dict[str, _Shard] = {}
        self._wanted: Counter[str] = Counter()  # stream -> how many wanted it
        self._group: asyncio.TaskGroup | None = None
        self._shard_tasks: list[asyncio.Task[None]] = []
        self._last_bad_log = 0.0
        self._state = State.IDLE

    async def __aenter__(self) -> Upstream:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Shutdown order: stop every shard's task (each closes its own links in `finally`).
        assert self._group is not None
        for task in self._shard_tasks:
            task.cancel()
        await self._group.__aexit__(None, None, None)
        self._group = None

    # -- what the hub asks for ------------------------------------------------------------------

    def want(self, streams: Iterable[str]) -> None:
        """Want each of `streams` once more; new ones are subscribed, batched, on the next sync."""
        touched: set[_Shard] = set()
        for stream in streams:
            self._wanted[stream] += 1
            if stream in self._assigned:
                continue
            cap = self.settings.streams_per_connection
            shard = next((s for s in self.shards if len(s.wanted) < cap), None) or self._new_shard()
            self._assigned[stream] = shard
            shard.wanted = shard.wanted | {stream}
            touched.add(shard)
        for shard in touched:
            shard.set_wanted(shard.wanted)

    def unwant(self, streams: Iterable[str]) -> None:
        """Want each of `streams` once less; one nobody wants any more is unsubscribed."""
        touched: set[_Shard] = set()
        for stream in streams:
            if self._wanted[stream] > 1:
                self._wanted[stream] -= 1
                continue
            self._wanted.pop(stream, None)
            self.last_raw.pop(stream, None)
            shard = self._assigned.pop(stream, None)
            if shard is not None:
                shard.wanted = shard.wanted - {stream}
                touched.add(shard)
        for shard in touched:
            shard.set_wanted(shard.wanted)

    def _new_shard(self) -> _Shard:
        assert self._group is not None, "Upstream used outside `async with`"
        shard = _Shard(f"#{len(self.shards) + 1}", self)
        self.shards.append(shard)
        self._shard_tasks.append(self._group.create_task(shard.run(), name=f"shard-{shard.name}"))
        return shard

    # -- what the links report ----------------------------------------------------------------

    def deliver(self, message: Message, raw: str | bytes) -> None:
        self.last_message = time.monotonic()
        self.messages += 1
        if message.stream is not None:
            # For the debug panel: what Binance sent, beside what it became. One reference per
            # stream, replaced by the next message.
            self.last_raw[message.stream] = raw
        self.on_event(message)

    def bad_frame(self, exc: ParseError, raw: str | bytes) -> None:
        """Count a message we cannot use; log it at most once every 10 s, so a flood stays
        quiet."""
        self.bad_frames += 1
        now = time.monotonic()
        if now - self._last_bad_log >= 10.0:
            self._last_bad_log = now
            logger.warning(
                "upstream: skipped a frame we cannot use (%d so far): %s: %.200r",
                self.bad_frames,
                exc,
                raw,
            )

    def note_error(self, message: str) -> None:
        self.last_error = message

    def state_changed(self) -> None:
        state = self.state
        if state != self._state:
            self._state = state
            self.on_state()

    # -- what the hub and /healthz read ----------------------------------------------------------

    @property
    def state(self) -> State:
        """The worst state of any shard that has streams; idle when nothing is wanted."""
        states = [s.state for s in self.shards if s.wanted or s.state != State.IDLE]
        for worst in (State.DOWN, State.RECONNECTING, State.CONNECTING, State.LIVE):
            if worst in states:
                return worst
        return State.IDLE

    def streams(self) -> list[str]:
        return sorted(self._assigned)

    def shard_status(self) -> list[ShardStatus]:
        return [
            ShardStatus(s.name, s.state, len(s.wanted), s.failures, s.connected_since)
            for s in self.shards
        ]

    def connections(self) -> int:
        return sum(len(s.links) for s in self.shards)
