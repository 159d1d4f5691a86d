"""Viewer limits: how many SSE streams one client address, and the whole server, may hold.

One visitor must not be able to take the server's capacity from the others: past
`max_streams_per_client` open streams (SSE viewers and WebSocket clients together) from one
address the next gets a 429, past `max_viewers` in all a 503, each with a sentence and a
Retry-After. Counting is the only job here, refusals included (for /metrics).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# What a refused browser is told to wait, in seconds (its EventSource retries on its own).
RETRY_AFTER = 10


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


class ViewerLimits:
    """Counts open streams per client address and in total."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self.open: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by reason

    def acquire(self, client: str) -> Refusal | None:
        """Count one more stream from `client`, or say why not (and count nothing)."""
        if sum(self.open.values()) >= self.total:
            self.refused["server_full"] += 1
            return Refusal(503, f"the server is full ({self.total} live viewers); try again soon")
        if self.open[client] >= self.per_client:
            self.refused["per_client"] += 1
            return Refusal(
                429,
                f"too many live streams from your address ({self.per_client}); "
                "close some tabs, or show every symbol on one page",
            )
        self.open[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]
