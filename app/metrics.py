"""/metrics: the server's counters in Prometheus' text format, read at scrape time.

Nothing is counted through prometheus_client on the hot path: the hub, the upstream, the REST
client and the limits keep plain integers as they work, and `Collector.collect` turns them into
metric families when Prometheus asks (prometheus_client's custom-collector pattern). So a
scrape costs a walk over the open connections, and a send costs an integer addition. The
registry is one per app, not the process-wide default, so two apps in one process (tests) never
collide. Every name starts with `pricestream_`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import tempfile
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from app.binance import State
from app.hub import Hub
from app.limits import ViewerLimits
from app.rest import Rest
from app.subscriber import LATENCY_BUCKETS, Latency
from app.symbols import SymbolDirectory
from app.workers import Worker, shared_metrics_path

logger = logging.getLogger(__name__)
# How often (seconds) each worker leaves its metrics for the others: a scrape answered by one
# worker shows the others' as of at most this long ago.
SHARE_INTERVAL = 1.0


class PricestreamCollector(Collector):
    """Reads the live objects of one app into metric families on every scrape."""

    def __init__(
        self, hub: Hub, limits: ViewerLimits, rest: Rest, directory: SymbolDirectory
    ) -> None:
        self.hub, self.limits, self.rest, self.directory = hub, limits, rest, directory

    def collect(self) -> Iterator[Metric]:
        hub, up = self.hub, self.hub.upstream
        viewers = GaugeMetricFamily(
            "pricestream_viewers", "Open live connections, by transport", labels=["transport"]
        )
        for transport, count in hub.viewers().items():
            viewers.add_metric([transport], count)
        yield viewers
        yield GaugeMetricFamily(
            "pricestream_upstream_connected",
            "Upstream WebSocket connections open",
            value=up.connections(),
        )
        yield GaugeMetricFamily(
            "pricestream_upstream_live",
            "1 while every upstream connection with streams delivers data, else 0",
            value=1 if up.state in (State.LIVE, State.IDLE) else 0,
        )
        yield GaugeMetricFamily(
            "pricestream_upstream_streams", "Streams subscribed upstream", value=len(up.streams())
        )
        if up.last_message is not None:
            yield GaugeMetricFamily(
                "pricestream_upstream_last_message_age_seconds",
                "Seconds since the last upstream data message (absent before the first)",
                value=time.monotonic() - up.last_message,
            )
        for name, help_text, value in (
            ("upstream_messages", "Upstream data messages received", up.messages),
            ("upstream_reconnects", "Upstream connection failures and reconnects", up.reconnects),
            ("upstream_rotations", "Upstream connections replaced ahead of a cut", up.rotations),
            ("upstream_resubscribes", "Silent streams subscribed anew", up.resubscribes),
            ("upstream_bad_messages", "Upstream messages skipped as unusable", up.bad_frames),
            (
                "renders",
                "Fragments rendered (once per update, for all viewers)",
                hub.events_rendered,
            ),
            (
                "json_encodes",
                "Client messages encoded (once per update, for all)",
                hub.json_encoded,
            ),
        ):
            yield CounterMetricFamily(f"pricestream_{name}", help_text, value=value)
        yield GaugeMetricFamily("pricestream_topics", "Live topics", value=len(hub.entries))
        yield GaugeMetricFamily(
            "pricestream_stale_topics",
            "Topics showing data that cannot be trusted as live",
            value=sum(1 for e in hub.entries.values() if e.stale),
        )
        events = CounterMetricFamily(
            "pricestream_events_sent", "Updates sent to viewers and clients", labels=["transport"]
        )
        sizes = CounterMetricFamily(
            "pricestream_bytes_sent", "Bytes of updates sent", labels=["transport"]
        )
        for transport, (count, size) in hub.sent().items():
            events.add_metric([transport], count)
            sizes.add_metric([transport], size)
        yield events
        yield sizes
        refusals = CounterMetricFamily(
            "pricestream_refusals",
            "Streams and sockets refused (per_client, server_full, bad_input, origin)",
            labels=["reason"],
        )
        for reason in ("per_client", "server_full", "bad_input", "origin"):
            refusals.add_metric([reason], self.limits.refused[reason])
        yield refusals
        rest = self.rest
        calls = CounterMetricFamily(
            "pricestream_rest_calls",
            "REST calls to Binance by path and outcome (HTTP status, timeout or error)",
            labels=["path", "outcome"],
        )
        for (path, outcome), count in sorted(rest.outcomes.items()):
            calls.add_metric([path, outcome], count)
        yield calls
        if rest.used_weight is not None:
            yield GaugeMetricFamily(
                "pricestream_rest_used_weight",
                "Binance's request weight used this minute, as it last told us",
                value=rest.used_weight,
            )
        yield GaugeMetricFamily(
            "pricestream_rest_paused_seconds",
            "Seconds left before REST calls resume after a 429 or 418",
            value=rest.cooling_down(),
        )
        yield GaugeMetricFamily(
            "pricestream_symbols_known",
            "Symbols in the symbol list (0: checking by format only)",
            value=len(self.directory.known),
        )
        yield _histogram(
            "pricestream_update_latency_seconds",
            "From Binance's event time to the end of the flush that wrote the update to every "
            "socket",
            hub.latency,
        )
        yield _histogram(
            "pricestream_flush_round_seconds",
            "How long one pass writing every viewer with news took; under load, the floor of "
            "the update latency, and near a second when the process is full",
            hub.rounds,
        )


def _histogram(name: str, documentation: str, latency: Latency) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=latency.total)


def registry(
    hub: Hub, limits: ViewerLimits, rest: Rest, directory: SymbolDirectory
) -> CollectorRegistry:
    """A registry of our collector and prometheus_client's process, platform and GC ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PricestreamCollector(hub, limits, rest, directory))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class WorkerShare:
    """With `--workers`, each worker's metrics in the folder the workers share, and all of them
    merged for a scrape, each sample labelled `worker` with its process's pid.

    A worker writes its own registry's text there every `SHARE_INTERVAL` (and when it answers a
    scrape), so whichever worker Prometheus reaches reports every worker: summed over `worker`,
    `pricestream_viewers` is every open viewer. A worker's file leaves with it (at its shutdown,
    or by the parent when it dies), and its counters with it, as a restarted process's would.
    Use as `async with WorkerShare(...)`: it owns the writing task."""

    def __init__(self, registry: CollectorRegistry, worker: Worker) -> None:
        self.registry = registry
        self.worker = worker
        self.path = shared_metrics_path(worker.share, os.getpid())
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerShare:
        self._task = asyncio.create_task(self._run(), name="metrics-share")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    async def _run(self) -> None:
        while True:
            try:
                await self.write()
            except OSError as exc:  # the shared folder gone or full: the next round may do
                logger.warning("metrics: cannot share this worker's figures: %s", exc)
            await asyncio.sleep(SHARE_INTERVAL)

    async def write(self) -> None:
        """Our metrics into the shared folder: collected on the event loop (the collector
        reads the hub, which only the loop may touch), written from a thread."""
        await asyncio.to_thread(self._store, generate_latest(self.registry))

    def _store(self, text: bytes) -> None:
        """Replaced in one step, through a file of this writer's own, so that a reader never
        sees half of it and two writers never share one."""
        handle, partial = tempfile.mkstemp(dir=self.worker.share, suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(text)
            os.replace(partial, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise

    async def merged(self) -> bytes:
        """Every worker's metrics as one exposition, ours fresh."""
        own = generate_latest(self.registry)
        return await asyncio.to_thread(self._merge, own)

    def _merge(self, own: bytes) -> bytes:
        self._store(own)
        families: dict[str, Metric] = {}
        for path in sorted(glob.glob(os.path.join(self.worker.share, "*.prom"))):
            pid = os.path.basename(path).removesuffix(".prom")
            try:
                with open(path, encoding="utf-8") as text:
                    parsed = list(text_string_to_metric_families(text.read()))
            except (OSError, ValueError):
                continue  # a worker that is just leaving, or just arriving
            for family in parsed:
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples += [
                    s._replace(labels={**s.labels, "worker": pid}) for s in family.samples
                ]
        shared = CollectorRegistry(auto_describe=False)
        shared.register(_Fixed(list(families.values())))
        return generate_latest(shared)


class _Fixed(Collector):
    """Metric families already collected, for `generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
