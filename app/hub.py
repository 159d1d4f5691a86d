"""The hub: one upstream subscription per symbol, shared by every viewer, rendered once per update.

Viewers (`Subscriber`s) ask for symbols; the hub reference-counts them, asks the upstream for a
symbol's streams on its first viewer and lets them go a grace period after its last. Each upstream
event updates the symbol's `Quote`, is rendered once and encoded once as an SSE event, and those
bytes are dropped into every viewer's latest-value slot for that symbol. Publishing never awaits:
a slow viewer simply skips to the newest fragment, its memory bounded by its number of symbols.
The hub also owns honesty: a symbol with no data for `stall_timeout`, or whose upstream is not
live, is re-rendered as stale. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sse_starlette import ServerSentEvent

from app.binance import State, Upstream, streams_for
from app.config import Settings
from app.market import Frame, Quote, Ticker, Trade
from app.render import Renderer, sse_event
from app.symbols import SymbolDirectory

logger = logging.getLogger(__name__)

STATUS_EVENT = "status"
# The keepalive comment's slot; proxies drop quiet connections, and so would a browser's NAT.
PING = ":ping"
PING_BYTES = ServerSentEvent(comment="ping").encode()


def price_event(symbol: str) -> str:
    """The SSE event name of a symbol's fragment (CONTRACT.md)."""
    return f"price-{symbol}"


class Subscriber:
    """One viewer: a latest-value slot per event name, and a wake-up flag.

    `pending` maps an event name to the newest encoded event not yet sent; a newer one for the same
    name replaces it (conflation), so nothing queues up behind a slow reader. The stream that
    serves it notes when a send started (`sending_since`), so the hub can cut off a reader whose
    socket has accepted nothing for too long, by cancelling `owner`.
    """

    __slots__ = ("closed", "cut_off", "owner", "pending", "sending_since", "symbols", "wake")

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols
        self.pending: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self.cut_off = False
        self.owner: asyncio.Task[object] | None = None
        self.sending_since: float | None = None

    def push(self, name: str, data: bytes) -> None:
        self.pending[name] = data
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def next_chunk(self) -> bytes | None:
        """Everything pending, as one chunk; None once the hub has closed this subscriber."""
        while not self.pending:
            if self.closed:
                return None
            await self.wake.wait()
            self.wake.clear()
        if self.closed:
            return None
        chunk = b"".join(self.pending.values())
        self.pending.clear()
        return chunk


class _Symbol:
    """The hub's state for one symbol that someone is (or was, within the grace period) watching."""

    __slots__ = ("expiry", "html", "last_data", "quote", "stale", "subscribed_at", "viewers")

    def __init__(self, symbol: str) -> None:
        self.quote = Quote(symbol)
        self.viewers: set[Subscriber] = set()
        self.html = ""
        self.stale = False
        self.subscribed_at = time.monotonic()
        self.last_data: float | None = None
        self.expiry: asyncio.TimerHandle | None = None


class Hub:
    """Fan-out from the upstream to viewers. Use as `async with Hub(...) as hub:`."""

    def __init__(self, settings: Settings, directory: SymbolDirectory, renderer: Renderer) -> None:
        self.settings = settings
        self.directory = directory
        self.renderer = renderer
        self.upstream = Upstream(settings, self._on_frame, self._on_state)
        self.symbols: dict[str, _Symbol] = {}
        self.subscribers: set[Subscriber] = set()
        self.frames: dict[str, bytes] = {}  # newest encoded event per event name
        self.events_rendered = 0
        self.status_html = ""
        self.draining = False
        # Viewers with something pending since the last flush; the flusher wakes each once.
        self._dirty: set[Subscriber] = set()
        self._dirty_event = asyncio.Event()
        self._clock: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._upstream_name = "demo exchange" if settings.demo else "Binance"

    async def __aenter__(self) -> Hub:
        await self.upstream.__aenter__()
        self._render_status()
        self._clock = asyncio.create_task(self._tick(), name="hub-clock")
        self._flusher = asyncio.create_task(self._flush(), name="hub-flusher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Shutdown order: end every viewer's stream first (their loops return), then stop the
        # clock, the flusher and the grace timers, and last close the upstream connections.
        self.drain()
        for task in (self._clock, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for entry in self.symbols.values():
            if entry.expiry is not None:
                entry.expiry.cancel()
        await self.upstream.__aexit__(*exc_info)

    # -- viewers --------------------------------------------------------------------------------

    def drain(self) -> None:
        """The server is stopping: end every viewer's stream now, and any that opens later."""
        self.draining = True
        for sub in list(self.subscribers):
            sub.close()

    def subscribe(self, symbols: Iterable[str]) -> Subscriber:
        """A new viewer of checked `symbols`; its slots start with the current fragment of each."""
        sub = Subscriber(tuple(symbols))
        if self.draining:
            sub.close()
        self.subscribers.add(sub)
        sub.push(STATUS_EVENT, self.frames[STATUS_EVENT])
        for symbol in sub.symbols:
            entry = self._acquire(symbol)
            entry.viewers.add(sub)
            sub.push(price_event(symbol), self.frames[price_event(symbol)])
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        for symbol in sub.symbols:
            entry = self.symbols.get(symbol)
            if entry is not None:
                entry.viewers.discard(sub)
                self._release(symbol)

    async def fragment(self, symbol: str, wait: float = 0.0) -> str:
        """The symbol's fragment now; waits up to `wait` s for a first price if it has none."""
        sub = self.subscribe([symbol])
        try:
            if not self.symbols[symbol].quote.has_price and wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await sub.next_chunk()  # the snapshot
                        while not self.symbols[symbol].quote.has_price:
                            await sub.next_chunk()
            return self.symbols[symbol].html
        finally:
            self.unsubscribe(sub)

    # -- reference counting ---------------------------------------------------------------------

    def _acquire(self, symbol: str) -> _Symbol:
        entry = self.symbols.get(symbol)
        if entry is None:
            entry = self.symbols[symbol] = _Symbol(symbol)
            self.upstream.want(streams_for(symbol))
            self._render(entry)
            logger.debug("hub: subscribed %s", symbol)
        elif entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        return entry

    def _release(self, symbol: str) -> None:
        entry = self.symbols[symbol]
        if not entry.viewers and entry.expiry is None:
            loop = asyncio.get_running_loop()
            entry.expiry = loop.call_later(self.settings.grace_period, self._expire, symbol)

    def _expire(self, symbol: str) -> None:
        entry = self.symbols.get(symbol)
        if entry is None or entry.viewers:
            return
        del self.symbols[symbol]
        self.frames.pop(price_event(symbol), None)
        self.upstream.unwant(streams_for(symbol))
        logger.debug("hub: unsubscribed %s after the grace period", symbol)

    # -- upstream events ------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        event = frame.event
        if not isinstance(event, Trade | Ticker):
            return
        entry = self.symbols.get(event.symbol)
        if entry is None:
            return  # a late frame for a symbol we have just let go
        quote = (
            entry.quote.with_trade(event)
            if isinstance(event, Trade)
            else (entry.quote.with_ticker(event))
        )
        entry.last_data = time.monotonic()
        if quote is None:
            if entry.stale:
                self._refresh_staleness(entry)
            return  # out of order or a duplicate: what is shown is already newer
        entry.quote = quote
        entry.stale = self._is_stale(entry, entry.last_data)
        self._publish(entry)

    def _on_state(self) -> None:
        self._render_status()
        for sub in self.subscribers:
            sub.push(STATUS_EVENT, self.frames[STATUS_EVENT])
        now = time.monotonic()
        for entry in self.symbols.values():
            self._refresh_staleness(entry, now)

    # -- rendering and publishing ----------------------------------------------------------------

    def _render(self, entry: _Symbol) -> bytes:
        symbol = entry.quote.symbol
        info = self.directory.info(symbol)
        entry.html = self.renderer.fragment(
            "quote",
            quote=entry.quote,
            stale=entry.stale,
            demo=self.settings.demo,
            decimals=info.decimals if info else None,
            quote_asset=info.quote if info else "",
        )
        data = sse_event(price_event(symbol), entry.html)
        self.frames[price_event(symbol)] = data
        self.events_rendered += 1
        return data

    def _publish(self, entry: _Symbol) -> None:
        """Hand the new fragment to every viewer of the symbol. The hot path: a dict write per
        viewer, then one C-level set union; viewers are woken by the flusher, not here."""
        data = self._render(entry)
        name = price_event(entry.quote.symbol)
        viewers = entry.viewers
        for sub in viewers:
            sub.pending[name] = data
        self._dirty |= viewers
        self._dirty_event.set()

    async def _flush(self) -> None:
        """Wake every viewer with something pending, then let `flush_interval` pass, so that a
        busy symbol's updates leave in one send per viewer per interval, not one per update.
        One timer for the whole hub, never one per viewer."""
        interval = self.settings.flush_interval
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            for sub in dirty:
                sub.wake.set()
            await asyncio.sleep(interval)

    def _render_status(self) -> None:
        state = self.upstream.state
        name = self._upstream_name
        labels = {
            State.LIVE: "Live" + (" · demo exchange" if self.settings.demo else ""),
            State.IDLE: "Idle",
            State.CONNECTING: f"Connecting to {name}…",
            State.RECONNECTING: f"Reconnecting to {name}…",
            State.DOWN: f"{name} unreachable, retrying",
        }
        self.status_html = self.renderer.fragment("status", state=str(state), label=labels[state])
        self.frames[STATUS_EVENT] = sse_event(STATUS_EVENT, self.status_html)

    # -- staleness --------------------------------------------------------------------------------

    def _is_stale(self, entry: _Symbol, now: float) -> bool:
        """No data yet: loading until the stall limit, then an error. A price: stale when old or
        when the upstream is not live."""
        limit = self.settings.stall_timeout
        if entry.last_data is None:
            return now - entry.subscribed_at > limit
        return self.upstream.state != State.LIVE or now - entry.last_data > limit

    def _refresh_staleness(self, entry: _Symbol, now: float | None = None) -> None:
        stale = self._is_stale(entry, time.monotonic() if now is None else now)
        if stale != entry.stale:
            entry.stale = stale
            # A fragment that only changes its stale flag must not flash as a price move.
            entry.quote = replace(entry.quote, changed=False)
            self._publish(entry)

    async def _tick(self) -> None:
        """The hub's clock, a few times per stall period: silence is an event too (staleness),
        quiet streams get a keepalive comment, and a reader stuck in one send is cut off."""
        settings = self.settings
        interval = max(0.1, min(1.0, settings.stall_timeout / 4, settings.sse_ping / 2))
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + settings.sse_ping
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for entry in list(self.symbols.values()):
                self._refresh_staleness(entry, now)
            now = loop.time()
            if now >= next_ping:
                next_ping = now + settings.sse_ping
                for sub in self.subscribers:
                    sub.push(PING, PING_BYTES)
            for sub in self.subscribers:
                since = sub.sending_since
                if since is not None and now - since > settings.send_timeout and not sub.cut_off:
                    sub.cut_off = True
                    sub.close()
                    if sub.owner is not None:
                        sub.owner.cancel()

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        up = self.upstream
        state = up.state
        age = None if up.last_message is None else round(time.monotonic() - up.last_message, 3)
        if state == State.DOWN:
            status = "down"
        elif state in (State.LIVE, State.IDLE) and self.directory.known:
            status = "ok"
        else:
            status = "degraded"
        return {
            "status": status,
            "demo": self.settings.demo,
            "upstream": {
                "url": self.settings.upstream,
                "state": str(state),
                "connections": up.connections(),
                "shards": [
                    {
                        "name": s.name,
                        "state": str(s.state),
                        "streams": s.streams,
                        "failures": s.failures,
                    }
                    for s in up.shard_status()
                ],
                "reconnects": up.reconnects,
                "rotations": up.rotations,
                "resubscribes": up.resubscribes,
                "bad_frames": up.bad_frames,
                "last_error": up.last_error,
                "last_message_age": age,
            },
            "streams": up.streams(),
            "symbols": {
                "source": self.directory.source,
                "count": len(self.directory.known),
                "last_error": self.directory.last_error,
            },
            "stale": sorted(s for s, e in self.symbols.items() if e.stale),
            "viewers": len(self.subscribers),
        }
