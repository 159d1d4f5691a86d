"""Settings: every knob the server has, with its default and one line of help.

This module is the only reader of the environment. `Settings.from_env` takes a mapping (tests pass a
dict), and the CLI builds its flags from the same field list, so a setting, its flag, its
`PRICESTREAM_*` variable and its README row can never drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "PRICESTREAM_"
# scheme://host[:port], as browsers send it in the Origin header.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting's value cannot be used; the message names the setting."""


def _setting(default: Any, help: str, *, upper: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "upper": upper})


@dataclass(frozen=True)
class Settings:
    """What the server is told; built once at start-up and passed down, never global."""

    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(8000, "port to listen on")
    symbols: tuple[str, ...] = _setting(
        ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"),
        "the watchlist shown at / (comma-separated)",
        upper=True,
    )
    upstream: str = _setting(
        "wss://stream.binance.com:9443",
        "Binance market-stream base URL (e.g. wss://stream.binance.us:9443)",
    )
    rest: str = _setting(
        "https://api.binance.com",
        "Binance REST base URL, for the symbol list (/api/v3/exchangeInfo)",
    )
    demo: bool = _setting(
        False, "run a built-in simulated exchange on loopback and connect to it instead"
    )
    log_level: str = _setting("info", "debug, info, warning or error")
    data_dir: str = _setting(
        "~/.local/share/pricestream", "folder of the database (alerts, portfolio): one SQLite file"
    )
    database: str = _setting(
        "",
        "where alerts and the portfolio live: empty for the SQLite file in --data-dir, or "
        "postgresql://user:password@host:port/name, one database for several servers",
    )
    database_poll: float = _setting(
        2.0,
        "seconds between looks at the database for alerts other servers made, deleted or fired",
    )
    workers: str = _setting(
        "1",
        "processes serving the same port, each with its own upstream connection: a number, or "
        "auto for one per core",
    )
    owner_token: str = _setting(
        "",
        "the owner's secret for alerts and the portfolio (without it they answer loopback "
        "clients only)",
    )
    forwarded_allow_ips: str = _setting(
        "127.0.0.1",
        "proxies whose X-Forwarded-For is believed for the client's address (comma-separated; "
        "* for any)",
    )
    max_alerts: int = _setting(10000, "most alerts kept (armed and fired)")
    webhook_timeout: float = _setting(10.0, "seconds one webhook attempt may take")
    webhook_give_up: float = _setting(
        86400.0, "seconds after a firing when an undelivered webhook is marked failed"
    )
    webhook_forbid_private: bool = _setting(
        False,
        "refuse webhooks to loopback, private and link-local addresses (checked at each attempt)",
    )

    max_symbols: int = _setting(
        50, "most symbols, or topics, one page or SSE connection may ask for"
    )
    max_streams_per_client: int = _setting(
        20, "most open SSE streams from one client address (answered 429 past it)"
    )
    max_viewers: int = _setting(10000, "most open SSE streams in all (answered 503 past it)")
    grace_period: float = _setting(
        30.0, "seconds a symbol stays subscribed upstream after its last viewer leaves"
    )
    stall_timeout: float = _setting(
        10.0,
        "seconds without upstream data before a price shows as stale and a silent "
        "connection is replaced",
    )
    backoff_initial: float = _setting(1.0, "first reconnect delay in seconds (doubles per failure)")
    backoff_max: float = _setting(60.0, "longest reconnect delay in seconds")
    rotate_after: float = _setting(
        23 * 3600.0,
        "seconds after which an upstream connection is replaced before Binance's 24 h cut",
    )
    control_rate: float = _setting(
        3.0, "SUBSCRIBE/UNSUBSCRIBE messages per second per connection (Binance allows 5)"
    )
    streams_per_connection: int = _setting(
        1024, "streams per upstream connection before another one is opened (Binance's cap)"
    )
    upstream_ping: float = _setting(
        20.0, "seconds between our WebSocket pings to Binance; no pong in that time drops it"
    )
    symbols_refresh: float = _setting(3600.0, "seconds between refreshes of the symbol list")
    symbols_retry: float = _setting(
        30.0, "seconds before a failed symbol-list fetch (also at start-up) is tried again"
    )
    sse_ping: float = _setting(15.0, "seconds between SSE keepalive comments")
    sse_retry_ms: int = _setting(2000, "reconnect delay the browser is told to use, in ms")
    send_timeout: float = _setting(
        30.0, "seconds a viewer's socket may accept nothing before the stream is cut off"
    )
    flush_interval: float = _setting(
        0.005,
        "seconds the flusher pauses after each pass over the viewers, so that busy updates leave "
        "in batches (shorter: more of a busy symbol's updates delivered, more sends for them)",
    )
    ws_ping: float = _setting(
        20.0,
        "seconds between WebSocket pings to API clients; one that has not answered within as "
        "long again is dropped",
    )
    ws_deflate: bool = _setting(
        False,
        "offer permessage-deflate to WebSocket clients (smaller messages, more CPU per client)",
    )
    direct_writes: bool = _setting(
        True,
        "write each update straight to the viewer's socket rather than through an ASGI send "
        "(several times cheaper per viewer; off, the stream is served as any ASGI app would)",
    )
    render_interval: float = _setting(
        0.2,
        "least seconds between two renders of a price card or chart; 0 renders every update",
    )
    table_render_interval: float = _setting(
        0.5,
        "least seconds between two renders of an order book or trade tape (each resends its "
        "whole table; the book arrives 10 times a second); 0 renders every update",
    )
    shutdown_timeout: float = _setting(
        1.0, "seconds open connections get to close at shutdown before they are cut"
    )
    public_url: str = _setting(
        "", "our address as other sites reach it, for embed snippets (default: as requested)"
    )
    frame_ancestors: tuple[str, ...] = _setting(
        ("*",), "origins that may show /embed pages in a frame (comma-separated; * for any)"
    )
    cors_origins: tuple[str, ...] = _setting(
        ("*",), "origins whose pages may read /sse and /fragment (comma-separated; * for any)"
    )

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 < self.port < 65536 and self.port != 0:
            raise SettingsError(f"port {self.port} is not a TCP port")
        if not self.symbols:
            raise SettingsError("symbols must name at least one symbol")
        if self.database_poll <= 0:
            raise SettingsError("database_poll must be positive")
        for name in (
            "grace_period",
            "backoff_initial",
            "backoff_max",
            "control_rate",
            "render_interval",
            "table_render_interval",
        ):
            if getattr(self, name) < 0 or (name == "control_rate" and self.control_rate == 0):
                raise SettingsError(f"{name} must be positive")
        if self.control_rate > 4:
            # Binance closes a connection past 5 incoming messages a second, and our pings
            # count too; 4 keeps a margin for them and for clock jitter.
            raise SettingsError("control_rate must be at most 4 (Binance allows 5, pings included)")
        for name in ("frame_ancestors", "cors_origins"):
            for origin in getattr(self, name):
                if origin != "*" and not _ORIGIN.fullmatch(origin):
                    raise SettingsError(
                        f"{name}: {origin!r} is not an origin like https://example.com"
                    )
        if self.public_url and not _ORIGIN.fullmatch(self.public_url.rstrip("/")):
            raise SettingsError(
                f"public_url: {self.public_url!r} is not like https://prices.example.com"
            )
        for name in ("max_symbols", "max_streams_per_client", "max_viewers", "max_alerts"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise SettingsError(
                "database must be empty (SQLite in --data-dir) or a postgresql:// URL"
            )
        if self.workers != "auto" and not (self.workers.isdigit() and 1 <= int(self.workers)):
            raise SettingsError(f"workers must be a number from 1, or auto, not {self.workers!r}")
        if self.streams_per_connection < 2:
            raise SettingsError("streams_per_connection must be at least 2")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Defaults overridden by every `PRICESTREAM_<NAME>` variable present in `environ`."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = parse_value(f, raw, source=ENV_PREFIX + f.name.upper())
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    return fields(Settings)


def parse_value(f: dataclasses.Field[Any], raw: str, *, source: str) -> Any:
    """Turn the text of a flag or variable into the field's type, or say what is wrong."""
    kind: type[Any] = type(f.default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is tuple:
            items = (s.strip() for s in raw.split(","))
            return tuple(s.upper() if f.metadata["upper"] else s for s in items if s)
        if kind is str and f.name == "log_level":
            return raw.strip().lower()
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{source}: cannot read {raw!r} as {kind.__name__}") from None
