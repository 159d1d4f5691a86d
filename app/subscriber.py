"""A viewer or API client as the hub sees it: a latest-value slot per topic (`Subscriber`),
the socket the hub may write to itself (`Writer`, implemented in app.direct), and the plain
histogram the hub times its updates and rounds with (`Latency`). The hub (app.hub) fills the
slots and flushes them; the streams (app.stream, app.ws) own a subscriber for a connection's
life."""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable
from typing import Any, Protocol

from app.topics.key import Topic

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the update-latency histogram's buckets, Prometheus' defaults.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Latency:
    """A histogram of durations (update latencies, flush rounds), counted in plain integers:
    observing costs a bisect and two additions; /metrics reads it at scrape time."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class Writer(Protocol):
    """A socket the hub writes to itself (app.direct has the two kinds): what it needs of one."""

    # Called (by the protocol) when a full socket buffer has drained below its low-water mark.
    on_writable: Callable[[], None] | None

    def usable(self) -> bool:
        """May updates take this way from now on? Asked once, after the first ASGI send."""
        ...

    def open(self) -> bool:
        """False once the connection is closing, by every sign there is (off the hot path)."""
        ...

    # True once the connection is lost: write nothing more. (`lost` and `paused` are read for
    # every viewer of every update, so a writer may keep them as attributes. A connection
    # closed by us but not yet lost takes a few more writes, harmlessly, or is cut off by
    # the send timeout if its buffer is full.)
    @property
    def lost(self) -> bool: ...

    # Is the socket's buffer over its high-water mark (uvicorn's flow control)?
    @property
    def paused(self) -> bool: ...

    def write(self, items: list[Any]) -> int:
        """Frame `items` (SSE bytes, or JSON text) and hand them to the socket; how much
        (bytes of events, or characters of messages, without the framing)."""
        ...


class Subscriber:
    """One viewer (an SSE stream) or client (a WebSocket): a latest-value slot per event name,
    and a wake-up flag.

    `pending` maps an event name to the newest encoded update not yet sent (SSE bytes, or JSON
    text for a WebSocket client); a newer one for the same name replaces it (conflation), so
    nothing queues up behind a slow reader. A WebSocket client's answers to its own messages
    are never conflated: they wait in `replies`, which its session keeps bounded. The stream
    that serves it notes when a send started (`sending_since`), so the hub can cut off a reader
    whose socket has accepted nothing for too long, by cancelling `owner`.
    """

    __slots__ = (
        "bytes_out",
        "closed",
        "cut_off",
        "direct",
        "events_out",
        "notify",
        "owner",
        "pending",
        "portfolio",
        "private",
        "replies",
        "sending_since",
        "stop_by_cancel",
        "topics",
        "transport",
        "wake",
    )

    def __init__(self, topics: tuple[Topic, ...], transport: str = "sse") -> None:
        self.topics = topics
        self.transport = transport  # "sse", "ws", or "peek" (the hub's own, for one answer)
        self.pending: dict[str, Any] = {}
        self.replies: list[str] = []  # answers to a WebSocket client's own messages, in order
        self.wake = asyncio.Event()
        self.closed = False
        self.cut_off = False
        self.owner: asyncio.Task[object] | None = None
        self.sending_since: float | None = None
        self.private = False  # the owner's own page: also told of fired alerts
        self.portfolio = False  # the owner's portfolio page: also sent its table
        self.events_out = 0  # counted here when taken for sending
        self.bytes_out = 0  # counted by the stream that sends them
        # Written to by the hub's flusher itself (app.direct), rather than woken to send:
        self.direct: Writer | None = None
        self.notify: Callable[[Subscriber], None] | None = None  # the hub, told of news
        # Its task waits on something else than `wake` (its socket), so stopping it means
        # cancelling it: the hub's clock cutting it off, or a direct stream at shutdown.
        self.stop_by_cancel = False

    def ended_by_hub(self, what: str, limit: float) -> bool:
        """In the `except CancelledError` of the task that serves it: True (and the task's
        cancellation taken back) if the hub stopped it (`cut_off` says whether for accepting
        nothing), so the task can end its response there; False for any other cancellation,
        which the caller must re-raise."""
        if not (self.closed and self.stop_by_cancel):
            return False
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        if self.cut_off:
            logger.info("cut off %s whose socket accepted nothing for %g s", what, limit)
        return True

    def push(self, name: str, data: Any) -> None:
        self.pending[name] = data
        self._news()

    def reply(self, text: str) -> None:
        self.replies.append(text)
        self._news()

    def _news(self) -> None:
        """Something to send: wake its task, or tell the hub, which writes to it (direct)."""
        if self.notify is None:
            self.wake.set()
        else:
            self.notify(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake.set()
        if self.stop_by_cancel and self.owner is not None:
            self.owner.cancel()

    def cut(self) -> None:
        """Stop a reader whose socket has accepted nothing for too long: its task is stuck in
        a send (or, if direct, waits on its socket), so it is cancelled."""
        self.cut_off = True
        stopping = self.closed and self.stop_by_cancel  # cancelled already
        self.stop_by_cancel = True
        self.closed = True
        self.wake.set()
        if not stopping and self.owner is not None:
            self.owner.cancel()

    def take(self) -> list[Any]:
        """Everything to send now, in order (a client's replies, then the newest of each
        topic), counted as sent."""
        if self.replies:
            items, self.replies = self.replies, []
            items += self.pending.values()
        else:  # nearly always: one list, not two
            items = list(self.pending.values())
        self.events_out += len(items)
        self.pending.clear()
        return items

    async def _ready(self) -> bool:
        """Wait until something is pending (or a reply); False once the hub has closed this."""
        while not (self.pending or self.replies):
            if self.closed:
                return False
            await self.wake.wait()
            self.wake.clear()
        return not self.closed

    async def next_chunk(self) -> bytes | None:
        """Everything pending, as one chunk; None once the hub has closed this subscriber."""
        if not await self._ready():
            return None
        chunk = b"".join(self.pending.values())
        self.events_out += len(self.pending)
        self.pending.clear()
        return chunk

    async def next_batch(self) -> list[str] | None:
        """A WebSocket client's next messages: its replies first, in order, then the newest of
        each topic; None once closed."""
        if not await self._ready():
            return None
        return self.take()

    async def closing(self) -> None:
        """Wait until the hub or its reader closes this subscriber (a direct one's task has
        nothing else to wait for)."""
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
