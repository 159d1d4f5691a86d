"""/metrics: the server's counters in Prometheus' text format, read at scrape time.

Nothing is counted through prometheus_client on the hot path: the hub, the upstream, the REST
client and the limits keep plain integers as they work, and `Collector.collect` turns them into
metric families when Prometheus asks (prometheus_client's custom-collector pattern). So a
scrape costs a walk over the open connections, and a send costs an integer addition. The
registry is one per app, not the process-wide default, so two apps in one process (tests) never
collide. Every name starts with `pricestream_`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.binance import State
from app.hub import LATENCY_BUCKETS, Hub
from app.limits import ViewerLimits
from app.rest import Rest
from app.symbols import SymbolDirectory


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
        latency = hub.latency
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "pricestream_update_latency_seconds",
            "From Binance's event time to the update's hand-over to every socket",
            buckets=buckets,
            sum_value=latency.total,
        )


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
