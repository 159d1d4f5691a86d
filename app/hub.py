"""The hub: one live state per topic, shared by every viewer, rendered once per update.

Viewers (`Subscriber`s) ask for topics; the hub reference-counts them, creates a topic's panel
and asks the upstream for its streams on its first viewer, and lets them go a grace period after
its last. Each upstream message goes to the panels of its stream; a panel that changed is
rendered once and encoded once as an SSE event, at most once per `render_interval` however fast
Binance sends, and those bytes are dropped into every viewer's latest-value slot for the topic.
Publishing never awaits: a slow viewer simply skips to the newest fragment, its memory bounded by
its number of topics. The hub fetches a panel's REST history (through the shared cache) on first
view, after a reconnect and when the panel finds a gap, and owns honesty: a topic with no data
for `stall_timeout`, or whose upstream is not live, is re-rendered as stale. A bug in one panel
is logged and costs that panel alone. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec
from sse_starlette import ServerSentEvent

from app.binance import State, Upstream
from app.config import Settings
from app.market import Message, ParseError
from app.render import Renderer, sse_event
from app.rest import Rest, RestError
from app.subscriber import Latency, Subscriber, Writer
from app.symbols import SymbolDirectory
from app.topics import make_panel
from app.topics.key import Topic
from app.topics.panel import Panel

logger = logging.getLogger(__name__)

STATUS_EVENT = "status"
# The keepalive comment's slot; proxies drop quiet connections, and so would a browser's NAT.
PING = ":ping"
PING_BYTES = ServerSentEvent(comment="ping").encode()
# A panel's REST history that failed is tried again after this long, doubling up to a minute.
HISTORY_RETRY = 2.0
HISTORY_RETRY_MAX = 60.0
# A failing panel logs its traceback at most this often (seconds), so a bug cannot flood the log.
PANEL_ERROR_LOG_INTERVAL = 60.0
# How long a flush round writes before it gives the event loop a turn (new updates, new
# viewers), and how many viewers it writes between two looks at the clock.
FLUSH_SLICE = 0.002
FLUSH_CHECK_EVERY = 32
_json = msgspec.json.Encoder()


class _Entry:
    """The hub's state for one topic that someone is (or was, within the grace period) watching."""

    __slots__ = (
        "clients",
        "expiry",
        "history_error",
        "history_task",
        "html",
        "html_due",
        "json",
        "last_data",
        "own",
        "panel",
        "rendered_at",
        "stale",
        "subscribed_at",
        "timer",
        "viewers",
    )

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self.viewers: set[Subscriber] = set()  # SSE streams
        self.clients: set[Subscriber] = set()  # WebSocket clients
        self.json: str | None = None  # the current state as a client message, once asked for
        self.html = ""
        self.html_due = False  # html is older than the state (no viewer needed it since)
        self.stale = False
        self.subscribed_at = time.monotonic()
        self.last_data: float | None = None  # monotonic time of the last upstream message
        self.rendered_at = 0.0  # monotonic
        self.expiry: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None  # a render held back by the rate limit
        self.history_task: asyncio.Task[None] | None = None
        self.history_error: str | None = None  # why the REST history could not be had
        # The streams whose messages prove this panel live (all of them, or only its own).
        self.own = frozenset(panel.own_streams() if panel.own_streams_are_steady else ())


class Hub:
    """Fan-out from the upstream to viewers. Use as `async with Hub(...) as hub:`."""

    def __init__(
        self, settings: Settings, directory: SymbolDirectory, renderer: Renderer, rest: Rest
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.renderer = renderer
        self.rest = rest
        self.upstream = Upstream(settings, self._on_message, self._on_state)
        self.entries: dict[Topic, _Entry] = {}
        self.routes: dict[str, list[_Entry]] = {}  # stream -> the entries it feeds
        self.subscribers: set[Subscriber] = set()
        self.encoded: dict[str, bytes] = {}  # newest encoded SSE event per event name
        self.events_rendered = 0
        self.json_encoded = 0
        # What left for viewers and clients that have gone, by transport (`sent` adds the rest).
        self.sent_events: Counter[str] = Counter()
        self.sent_bytes: Counter[str] = Counter()
        # Binance's event time to the end of the flush that wrote the update to every direct
        # socket (and woke every other viewer's task to send it).
        self.latency = Latency()
        # How long each flush round took (every ready viewer written once): under load, the
        # update latency's floor, so the sign that a process is near full.
        self.rounds = Latency()
        self.turns_given = 0  # times a round let the loop in midway (FLUSH_SLICE)
        self._sending: list[int] = []  # event times (ms) of the updates the next flush carries
        self.status_html = ""
        self.status_json = ""
        self.draining = False
        # Viewers with something pending since the last flush; the flusher wakes each once.
        self._dirty: set[Subscriber] = set()
        self._dirty_event = asyncio.Event()
        self._clock: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._upstream_name = "demo exchange" if settings.demo else "Binance"
        self._last_state = State.IDLE
        self._history_tasks: set[asyncio.Task[None]] = set()
        self._listeners: dict[str, list[Callable[[Message], None]]] = {}
        self._ws_open = 0  # WebSocket sessions subscribed
        self._no_clients = asyncio.Event()  # set when the last one leaves
        self._panel_errors_logged: dict[Topic, float] = {}

    async def __aenter__(self) -> Hub:
        await self.upstream.__aenter__()
        self._render_status()
        self._clock = asyncio.create_task(self._tick(), name="hub-clock")
        self._flusher = asyncio.create_task(self._flush(), name="hub-flusher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Shutdown order: end every viewer's stream first (their loops return), then stop the
        # clock, the flusher, the history fetches and the timers, and last close the upstream
        # connections.
        self.drain()  # also stops new history fetches
        tasks = [t for t in (self._clock, self._flusher, *self._history_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Waited, not awaited: their CancelledError is theirs; ours must not be swallowed.
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("hub: %s had failed", task.get_name(), exc_info=task.exception())
        for entry in self.entries.values():
            for handle in (entry.expiry, entry.timer):
                if handle is not None:
                    handle.cancel()
        await self.upstream.__aexit__(*exc_info)

    # -- viewers --------------------------------------------------------------------------------

    def drain(self) -> None:
        """The server is stopping: end every viewer's stream now, and any that opens later."""
        self.draining = True
        for sub in list(self.subscribers):
            sub.close()

    async def clients_gone(self, limit: float) -> None:
        """Wait (at most `limit` s) until every WebSocket session has sent its close and left."""
        if self._ws_open:
            self._no_clients.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await self._no_clients.wait()

    def subscribe(self, topics: Iterable[Topic], transport: str = "sse") -> Subscriber:
        """A new viewer (`sse`) or client (`ws`) of checked `topics`; its slots start with the
        status and the current value of each. (`peek`: the hub's own, while it answers one
        request; like a viewer, but not counted as one.)"""
        sub = Subscriber((), transport)
        if self.draining:
            sub.close()
        self.subscribers.add(sub)
        self._ws_open += transport == "ws"
        sub.push(
            STATUS_EVENT, self.status_json if transport == "ws" else self.encoded[STATUS_EVENT]
        )
        self.add_topics(sub, topics)
        return sub

    def add_topics(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        """`sub` now also gets `topics` (checked), starting with their current value."""
        new = [t for t in dict.fromkeys(topics) if t not in sub.topics]
        entries = [self._acquire(topic) for topic in new]
        # The hub's own Topic objects, not the request's: one per topic, not per viewer.
        sub.topics += tuple(entry.panel.topic for entry in entries)
        for topic, entry in zip(new, entries, strict=True):
            if sub.transport == "ws":
                entry.clients.add(sub)
                sub.push(topic.event, self._client_message(entry))
            else:
                if entry.html_due:
                    self._render(entry)
                entry.viewers.add(sub)
                sub.push(topic.event, self.encoded[topic.event])

    def remove_topics(self, sub: Subscriber, topics: Iterable[Topic]) -> None:
        """`sub` no longer gets `topics`; what was pending for them is dropped."""
        gone = set(topics) & set(sub.topics)
        sub.topics = tuple(t for t in sub.topics if t not in gone)
        for topic in gone:
            sub.pending.pop(topic.event, None)
            self._leave(sub, topic)

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        if sub.direct is not None:
            sub.direct.on_writable = None
            sub.direct = None
            sub.notify = None
        if sub.transport == "ws":
            self._ws_open -= 1
            if not self._ws_open:
                self._no_clients.set()
        self.sent_events[sub.transport] += sub.events_out
        self.sent_bytes[sub.transport] += sub.bytes_out
        for topic in sub.topics:
            self._leave(sub, topic)

    def _leave(self, sub: Subscriber, topic: Topic) -> None:
        entry = self.entries.get(topic)
        if entry is not None:
            entry.viewers.discard(sub)
            entry.clients.discard(sub)
            self._release(entry)

    async def fragment(self, topic: Topic, wait: float = 0.0) -> str:
        """The topic's fragment now; waits up to `wait` s for first data if it has none."""
        async with self._watching(topic, wait) as entry:
            return entry.html

    async def message(self, topic: Topic, wait: float = 0.0) -> dict[str, Any]:
        """The topic's current value as a client message (a dict, for JSON), the same way."""
        async with self._watching(topic, wait) as entry:
            return {**entry.panel.data(), "stale": entry.stale}

    @contextlib.asynccontextmanager
    async def _watching(self, topic: Topic, wait: float) -> AsyncIterator[_Entry]:
        """The topic's entry, held for a moment by a viewer of our own, after waiting up to
        `wait` s for its first data to be shown."""
        sub = self.subscribe([topic], transport="peek")
        try:
            entry = self.entries[topic]
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        # Until the data is shown: a render held back by the rate limit ends
                        # in a publish, which wakes us.
                        while not entry.panel.has_data or entry.timer is not None:
                            if await sub.next_chunk() is None:
                                break  # the server is stopping
            yield entry
        finally:
            self.unsubscribe(sub)

    # -- reference counting ---------------------------------------------------------------------

    def _acquire(self, topic: Topic) -> _Entry:
        entry = self.entries.get(topic)
        if entry is None:
            panel = make_panel(topic, self.directory.info(topic.symbol))
            entry = self.entries[topic] = _Entry(panel)
            streams = panel.streams()
            for stream in streams:
                self.routes.setdefault(stream, []).append(entry)
            self.upstream.want(streams)
            self._start_history(entry)
            self._render(entry)
            entry.rendered_at = 0.0  # "loading" does not count: the first data goes out at once
            logger.debug("hub: subscribed %s", topic)
        elif entry.expiry is not None:
            entry.expiry.cancel()
            entry.expiry = None
        return entry

    def _release(self, entry: _Entry) -> None:
        if not entry.viewers and entry.expiry is None:
            loop = asyncio.get_running_loop()
            entry.expiry = loop.call_later(self.settings.grace_period, self._expire, entry)

    def _expire(self, entry: _Entry) -> None:
        topic = entry.panel.topic
        if self.entries.get(topic) is not entry or entry.viewers:
            return
        del self.entries[topic]
        self.encoded.pop(topic.event, None)
        streams = entry.panel.streams()
        for stream in streams:
            fed = self.routes[stream]
            fed.remove(entry)
            if not fed:
                del self.routes[stream]
        self.upstream.unwant(streams)
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.history_task is not None:
            # Cancelled here, awaited by whoever closes the hub if it has not ended by then.
            entry.history_task.cancel()
        self._panel_errors_logged.pop(topic, None)
        logger.debug("hub: unsubscribed %s after the grace period", topic)

    def _start_history(self, entry: _Entry, *, fresh: bool = False) -> None:
        """Fetch the panel's REST history, unless it has none, a fetch is under way, or the
        hub is closing."""
        entry.panel.history_due = False
        if self.draining or entry.panel.history() is None:
            return
        if entry.history_task is not None and not entry.history_task.done():
            return
        task = asyncio.create_task(
            self._fetch_history(entry, fresh), name=f"history {entry.panel.topic}"
        )
        entry.history_task = task
        self._history_tasks.add(task)
        task.add_done_callback(self._history_tasks.discard)

    async def _fetch_history(self, entry: _Entry, fresh: bool) -> None:
        """Seed the panel from REST (one call shared through the cache), retrying with backoff
        while it fails; live data keeps flowing meanwhile."""
        panel = entry.panel
        request = panel.history()
        assert request is not None
        delay = HISTORY_RETRY
        while True:
            try:
                answer = await self.rest.cached(
                    request.path, request.params, request.ttl, fresh=fresh
                )
                try:
                    changed = panel.seed(answer.body, answer.fetched_ms)
                except ParseError:
                    self.rest.forget(request.path, request.params)  # not for the next asker
                    raise
            except (RestError, ParseError) as exc:
                entry.history_error = f"history unavailable: {exc}"
                logger.warning("hub: %s: %s; retrying in %.0f s", panel.topic, exc, delay)
                self._changed(entry)
                await asyncio.sleep(max(delay, self.rest.cooling_down()))
                delay = min(delay * 2, HISTORY_RETRY_MAX)
                fresh = True
                continue
            if entry.history_error is not None or changed:
                entry.history_error = None
                self._changed(entry)
            return

    # -- upstream messages ----------------------------------------------------------------------

    def listen(self, stream: str, listener: Callable[[Message], None]) -> None:
        """Call `listener` with every message of `stream` (kept subscribed upstream until
        `unlisten`), viewers or not: how alerts hear their symbols' trades."""
        self._listeners.setdefault(stream, []).append(listener)
        self.upstream.want([stream])

    def unlisten(self, stream: str, listener: Callable[[Message], None]) -> None:
        listeners = self._listeners.get(stream, [])
        if listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[stream]
            self.upstream.unwant([stream])

    def tell_owner(self, key: str, html: str) -> None:
        """An `alert` event to every page of the owner's now (never conflated: one slot per
        `key`)."""
        data = sse_event("alert", html)
        for sub in self.subscribers:
            if sub.private:
                sub.push(f"alert:{key}", data)

    def tell_portfolio(self, html: str) -> None:
        """The portfolio table (SSE event `portfolio`) to every open portfolio page."""
        data = sse_event("portfolio", html)
        for sub in self.subscribers:
            if sub.portfolio:
                sub.push("portfolio", data)

    def _on_message(self, message: Message) -> None:
        listeners = self._listeners.get(message.stream or "")
        if listeners:
            for listener in listeners:
                try:
                    listener(message)
                except Exception:
                    logger.exception("hub: a listener of %s failed", message.stream)
        fed = self.routes.get(message.stream or "")
        if not fed:
            return  # a late message for a stream we have just let go
        now = time.monotonic()
        stream = message.stream
        payload = message.payload
        for entry in fed:
            if not entry.own or stream in entry.own:
                entry.last_data = now
            try:
                changed = entry.panel.apply(payload)
            except Exception:  # noqa: BLE001 (a bug in one panel must cost that panel alone)
                # Not re-raised: it would reach the upstream link and drop every stream on it.
                self._panel_failed(entry, "applying a message")
                continue
            if changed:
                self._changed(entry)
            elif entry.stale:
                self._refresh_staleness(entry, now)
            if entry.panel.history_due:
                self._start_history(entry, fresh=True)

    def _on_state(self) -> None:
        state = self.upstream.state
        if state == State.LIVE and self._last_state in (State.RECONNECTING, State.DOWN):
            # Back after a gap: what happened meanwhile (a candle's close, trades) came over no
            # stream, so the panels with REST history fetch it again.
            for entry in self.entries.values():
                self._start_history(entry, fresh=True)
        self._last_state = state
        self._render_status()
        for sub in self.subscribers:
            sub.push(
                STATUS_EVENT,
                self.status_json if sub.transport == "ws" else self.encoded[STATUS_EVENT],
            )
        now = time.monotonic()
        for entry in self.entries.values():
            self._refresh_staleness(entry, now)

    # -- rendering and publishing ----------------------------------------------------------------

    def _changed(self, entry: _Entry) -> None:
        """A panel changed: publish now, or once `render_interval` has passed since its last
        render (leading and trailing edge: a lone update goes out at once, a burst as one)."""
        interval: float = getattr(self.settings, entry.panel.render_interval_setting)
        if interval <= 0:
            self._publish(entry)
            return
        if entry.timer is not None:
            return  # a render is already due; it will show this change too
        wait = entry.rendered_at + interval - time.monotonic()
        if wait <= 0:
            self._publish(entry)
        else:
            entry.timer = asyncio.get_running_loop().call_later(wait, self._publish_due, entry)

    def _publish_due(self, entry: _Entry) -> None:
        entry.timer = None
        if self.entries.get(entry.panel.topic) is entry:
            self._publish(entry)

    def _panel_failed(self, entry: _Entry, doing: str) -> None:
        """Log a panel's bug, with its traceback at most once a minute per topic."""
        topic = entry.panel.topic
        now = time.monotonic()
        if now - self._panel_errors_logged.get(topic, -PANEL_ERROR_LOG_INTERVAL) >= (
            PANEL_ERROR_LOG_INTERVAL
        ):
            self._panel_errors_logged[topic] = now
            logger.exception("hub: %s failed %s; it keeps its last fragment", topic, doing)

    def _render(self, entry: _Entry) -> bytes:
        panel = entry.panel
        topic = panel.topic
        info = panel.info
        try:
            html = self.renderer.fragment(
                panel.template,
                topic=topic,
                stale=entry.stale,
                has_data=panel.has_data,
                demo=self.settings.demo,
                event_time=panel.event_time,
                error=entry.history_error,
                decimals=info.decimals if info else None,
                quote_asset=info.quote if info else "",
                base_asset=info.base if info else "",
                **panel.context(),
            )
        except Exception:  # noqa: BLE001 (as in _on_message: one panel's bug stays its own)
            self._panel_failed(entry, "rendering")
            if topic.event not in self.encoded:  # a first render: say so rather than nothing
                html = self.renderer.fragment("broken", topic=topic)
                self.encoded[topic.event] = sse_event(topic.event, html)
                entry.html = html
            return self.encoded[topic.event]
        entry.html = html
        entry.html_due = False
        data = sse_event(topic.event, html)
        self.encoded[topic.event] = data
        self.events_rendered += 1
        entry.rendered_at = time.monotonic()
        return data

    def _publish(self, entry: _Entry) -> None:
        """Hand the new fragment to every viewer of the topic, and the new message to every
        client. The hot path: a dict write per viewer, then one C-level set union; viewers are
        woken by the flusher, not here."""
        entry.stale = self._is_stale(entry, time.monotonic())
        name = entry.panel.topic.event
        viewers = entry.viewers
        if viewers:
            data = self._render(entry)
            for sub in viewers:
                sub.pending[name] = data
            self._dirty |= viewers
        else:
            # Only programs watch: no HTML until a viewer or a page asks for it (add_topics).
            entry.html_due = True
            entry.rendered_at = time.monotonic()  # the rate limit still counts this update
        entry.json = None
        if entry.clients:
            text = self._client_message(entry)  # encoded once for every client
            for sub in entry.clients:
                sub.pending[name] = text
            self._dirty |= entry.clients
        self._dirty_event.set()
        event_time = entry.panel.event_time
        if event_time and entry.panel.binance_time:
            self._sending.append(event_time)  # timed when the flush has written it

    def _client_message(self, entry: _Entry) -> str:
        if entry.json is None:
            try:
                entry.json = _json.encode({**entry.panel.data(), "stale": entry.stale}).decode()
            except Exception:  # noqa: BLE001 (as in _render: one panel's bug stays its own)
                self._panel_failed(entry, "encoding its message")
                return _json.encode({"type": "error", "code": "unavailable"}).decode()
            self.json_encoded += 1
        return entry.json

    async def _flush(self) -> None:
        """Send to every viewer with something pending, then let `flush_interval` pass, so
        that a busy topic's updates leave in one send per viewer per interval, not one per
        update. One timer for the whole hub, never one per viewer.

        A viewer whose socket we write to directly is written here, in this loop; any other
        is woken, and its task sends through ASGI. A direct viewer whose socket buffer is full
        (a slow reader) is skipped and keeps conflating: its socket tells us when it drains
        (`_notice`), and the clock cuts it off if that takes over `send_timeout`.

        A round over thousands of viewers takes milliseconds, so it gives the loop a turn
        every `FLUSH_SLICE` seconds: an update that arrives meanwhile is in the pending bytes
        of the viewers this round has not reached yet, and leaves with them now rather than a
        whole round later. Under load that halves the worst wait (docs/BENCHMARKS.md)."""
        interval = self.settings.flush_interval
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            sending, self._sending = self._sending, []
            started = loop.time()
            slice_end = started + FLUSH_SLICE
            countdown = FLUSH_CHECK_EVERY
            for sub in dirty:
                countdown -= 1
                if not countdown:
                    countdown = FLUSH_CHECK_EVERY
                    if loop.time() > slice_end:
                        self.turns_given += 1
                        await asyncio.sleep(0)  # `dirty` is ours: pushes go to self._dirty
                        slice_end = loop.time() + FLUSH_SLICE
                writer = sub.direct
                if writer is None:
                    sub.wake.set()
                elif not sub.closed:
                    self._write(sub, writer, loop)
            self.rounds.observe(loop.time() - started)
            now = time.time() * 1000
            for event_time in sending:
                self.latency.observe(max(0.0, now - event_time) / 1000)
            await asyncio.sleep(interval)

    @staticmethod
    def _write(sub: Subscriber, writer: Writer, loop: asyncio.AbstractEventLoop) -> None:
        """A direct viewer's pending bytes to its socket, unless it is gone or full."""
        if writer.lost:
            # Its connection is gone and its task may never hear of it (uvicorn tells a
            # pipelined request's cycle, not this one): end it here.
            sub.close()
        elif sub.pending or sub.replies:
            if writer.paused:
                if sub.sending_since is None:
                    sub.sending_since = loop.time()
                return
            sub.sending_since = None
            try:
                sub.bytes_out += writer.write(sub.take())
            except (OSError, RuntimeError):  # uvloop: "handler is closed"
                # Not raised: this loop writes to every viewer, and must go on.
                logger.warning("hub: a direct write failed; ending that stream")
                sub.close()

    def go_direct(self, sub: Subscriber, writer: Writer) -> None:
        """From now on, `sub`'s updates are written to `writer` by the flusher, and its task
        only waits for the end (`Subscriber.closing`, or its socket's disconnect)."""
        sub.direct = writer
        sub.notify = self._notice
        writer.on_writable = lambda: self._notice(sub)
        if sub.pending or sub.replies:
            self._notice(sub)

    def _notice(self, sub: Subscriber) -> None:
        """A direct viewer has news, or room again in its socket: write to it at the next
        flush."""
        self._dirty.add(sub)
        self._dirty_event.set()

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
        self.encoded[STATUS_EVENT] = sse_event(STATUS_EVENT, self.status_html)
        self.status_json = _json.encode({"type": "status", "state": str(state)}).decode()

    # -- staleness --------------------------------------------------------------------------------

    def _is_stale(self, entry: _Entry, now: float) -> bool:
        """No data yet: loading until the stall limit, then an error. Data: stale when old or
        when the upstream is not live."""
        limit = self.settings.stall_timeout
        state = self.upstream.state
        if entry.last_data is None:
            # REST history shown while the upstream is failing is not live either.
            trouble = state in (State.RECONNECTING, State.DOWN) and entry.panel.has_data
            return trouble or now - entry.subscribed_at > limit
        return state != State.LIVE or now - entry.last_data > limit

    def _refresh_staleness(self, entry: _Entry, now: float) -> None:
        if self._is_stale(entry, now) != entry.stale:
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
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
            for entry in list(self.entries.values()):
                self._refresh_staleness(entry, now)
            now = loop.time()
            if now >= next_ping:
                next_ping = now + settings.sse_ping
                for sub in self.subscribers:
                    if sub.transport != "ws":  # WebSocket clients get WebSocket pings
                        sub.push(PING, PING_BYTES)
            for sub in self.subscribers:
                since = sub.sending_since
                if since is not None and now - since > settings.send_timeout and not sub.cut_off:
                    sub.cut()

    def sent(self) -> dict[str, tuple[int, int]]:
        """Events and bytes sent so far, by transport, open connections included."""
        events, sizes = Counter(self.sent_events), Counter(self.sent_bytes)
        for sub in self.subscribers:
            events[sub.transport] += sub.events_out
            sizes[sub.transport] += sub.bytes_out
        return {t: (events[t], sizes[t]) for t in ("sse", "ws")}

    def viewers(self) -> dict[str, int]:
        """Open SSE streams and WebSocket clients (the hub's own peeks are not viewers)."""
        counts = {"sse": 0, "ws": 0}
        for sub in self.subscribers:
            if sub.transport in counts:
                counts[sub.transport] += 1
        return counts

    # -- health -----------------------------------------------------------------------------------

    def topics_report(self) -> list[dict[str, Any]]:
        """Per topic, for the debug panel: who watches it (counts only, never an address),
        whether it is live, and the last upstream message of its own stream beside the fragment
        it became."""
        now = time.monotonic()
        report = []
        for topic, entry in sorted(self.entries.items(), key=lambda item: item[0].name):
            if entry.html_due:
                self._render(entry)
            own = entry.panel.own_streams()[0]
            raw = self.upstream.last_raw.get(own)
            report.append(
                {
                    "topic": topic.name,
                    "sse": len(entry.viewers),
                    "ws": len(entry.clients),
                    "stale": entry.stale,
                    "data_age_s": None
                    if entry.last_data is None
                    else round(now - entry.last_data, 1),
                    "stream": own,
                    "last_message": None
                    if raw is None
                    else (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw),
                    "fragment": entry.html,
                }
            )
        return report

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
                        "connected_for_s": None
                        if s.connected_since is None
                        else round(time.time() - s.connected_since, 1),
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
                "age_s": None
                if self.directory.loaded_at is None
                else round(time.monotonic() - self.directory.loaded_at, 1),
                "last_error": self.directory.last_error,
            },
            "rest": self.rest.health(),
            "topics": sorted(t.name for t in self.entries),
            "stale": sorted(t.name for t, e in self.entries.items() if e.stale),
            "viewers": sum(self.viewers().values()),
            "viewers_by_transport": self.viewers(),
            # Written to by the hub itself (app.direct); the rest are served through ASGI.
            "viewers_direct": sum(sub.direct is not None for sub in self.subscribers),
        }
