"""What the store holds, as plain values: no SQL, no I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


class StoreError(RuntimeError):
    """The database cannot be used; the message says which file, why, and what to do."""


class StoreDown(RuntimeError):
    """The database cannot be reached at the moment (a server stopped, a network cut); the
    message is a sentence fit for a 503. The store tries again on its next use."""


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC time with milliseconds, the API's time format."""
    if seconds is None:
        return None
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    symbol: str
    condition: str  # "above" or "below"
    price: str  # the threshold, as the owner gave it
    webhook: str | None
    note: str | None
    state: str  # "armed" or "fired"
    created_at: float
    fired_at: float | None = None
    fired_price: str | None = None
    delivery: str | None = None  # the webhook delivery's state, if it has one

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "symbol": self.symbol,
            "condition": self.condition,
            "price": self.price,
            "webhook": self.webhook,
            "note": self.note,
            "state": self.state,
            "created_at": iso(self.created_at),
            "fired_at": iso(self.fired_at),
            "fired_price": self.fired_price,
            "delivery": self.delivery,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str  # also the Idempotency-Key of every attempt
    alert_id: str
    url: str
    state: str  # "pending", "delivered" or "failed"
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Holding:
    asset: str
    amount: str
    cost: str | None = None
