"""What every kind of live panel has in common: its streams, its reducer, its history, its look.

A `Panel` is one topic's state. The hub feeds it the upstream payloads of its streams (`apply`,
which says whether what is shown changed), asks it for the REST history it wants (`history`,
then `seed`: on first view, after a reconnect, and when the panel says `history_due`), and
renders it through its template with `context`. A panel does no I/O and knows nothing of
viewers, so adding a kind of panel is a new module beside the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from app.market import Payload
from app.symbols import SymbolInfo
from app.topics.key import Topic

# How many candles a chart shows, and the sparkline's one-minute points: one REST call
# (klines 1m, this limit) seeds both the 1m chart and a card's sparkline.
CANDLES = 60
# How long a klines answer may serve later openers: closed candles never change, and the
# forming one is overtaken by the stream within its 2 s cadence; a missed close is refetched.
KLINES_TTL = 10.0


@dataclass(frozen=True)
class History:
    """A REST call that seeds a panel, and how long its answer may be shared (seconds)."""

    path: str
    params: dict[str, str]
    ttl: float


def klines_history(symbol: str, interval: str) -> History:
    params = {"symbol": symbol, "interval": interval, "limit": str(CANDLES)}
    return History("/api/v3/klines", params, KLINES_TTL)


class Panel(ABC):
    """One topic's live state. Subclasses name their template and streams."""

    template: ClassVar[str]
    # True where the panel's own streams arrive steadily (the book ten times a second, klines
    # every two seconds): then only they prove it live, not the symbol's ticker.
    own_streams_are_steady: ClassVar[bool] = False
    # True where `event_time` is Binance's `E` (the book's is when we received it), so the
    # update latency can be measured from it.
    binance_time: ClassVar[bool] = True
    # The setting that limits how often this panel is rendered (seconds between renders).
    render_interval_setting: ClassVar[str] = "render_interval"

    def __init__(self, topic: Topic, info: SymbolInfo | None) -> None:
        self.topic = topic
        self.info = info
        self.history_due = False  # set when live data shows that something was missed

    @abstractmethod
    def own_streams(self) -> tuple[str, ...]:
        """The upstream streams whose events this panel shows."""

    def streams(self) -> tuple[str, ...]:
        """Every stream this panel listens to. The symbol's ticker comes every second whatever
        the market does, so a quiet market (no trade for a minute) never reads as stale, unless
        the panel's own streams are steady."""
        heartbeat = f"{self.topic.symbol.lower()}@ticker"
        own = self.own_streams()
        return own if heartbeat in own else (*own, heartbeat)

    @abstractmethod
    def apply(self, payload: Payload) -> bool:
        """Take one upstream payload; True if what the panel shows changed."""

    def history(self) -> History | None:
        """The REST call that fills this panel before live data arrives, if any."""
        return None

    def seed(self, body: bytes, fetched_ms: int) -> bool:
        """Merge the REST history's answer (given at `fetched_ms`); True if what is shown
        changed. Raises ParseError."""
        return False

    @property
    @abstractmethod
    def has_data(self) -> bool:
        """Anything to show yet (else the fragment says loading, or why not)."""

    @property
    @abstractmethod
    def event_time(self) -> int | None:
        """Binance's `E` (ms) of the newest data shown."""

    @abstractmethod
    def context(self) -> dict[str, Any]:
        """What the template needs beyond what every fragment gets. Called once per render."""

    @abstractmethod
    def data(self) -> dict[str, Any]:
        """The panel as a message for programs (JSON): decimals as the strings Binance sent,
        null for what has not come yet. The hub adds `stale`."""
