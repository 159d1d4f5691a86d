"""Every query of the store, written once: `SQLStore` runs them on SQLite or PostgreSQL alike.

A backend subclass supplies four things: how to run a function off the event loop (`_run`, on
the backend's one worker thread), how to execute a statement (`_execute`, `_executemany`, with
`?` placeholders), and a write transaction (`_transaction`). The rest is here, so the two
backends cannot drift apart. Two rules make several servers on one database safe: a firing is
one conditional UPDATE that only an armed alert passes, and a delivery is attempted only by the
server whose conditional UPDATE claimed it (a lease that lapses if that server dies); in both,
the number of rows changed decides, and the database is the only arbiter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from app.store.records import Alert, Delivery, Holding

T = TypeVar("T")

_ALERT = (
    "SELECT a.id, a.symbol, a.condition, a.price, a.webhook, a.note, a.state, a.created_at, "
    "a.fired_at, a.fired_price, d.state FROM alerts a LEFT JOIN deliveries d ON d.alert_id = a.id"
)
_DELIVERY = (
    "SELECT id, alert_id, url, state, attempts, created_at, next_attempt_at, last_error "
    "FROM deliveries"
)
# Pending, due, and claimed by nobody (or by a server whose lease has passed).
_CLAIMABLE = (
    "state = 'pending' AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)"
)
# Every write to the alerts ends with this, so other servers see that something changed.
_BUMP = "UPDATE alert_changes SET revision = revision + 1 WHERE id = 1"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def _alert(row: Sequence[Any]) -> Alert:
    return Alert(*row)


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


class SQLStore:
    """The Store interface over any connection that speaks our SQL."""

    name: str  # where the data is, for messages: a file, or a database without its password
    kind: str  # "sqlite" or "postgresql"
    _down: str | None = None  # why the database cannot be used, while it cannot

    @property
    def reachable(self) -> bool:
        """False from a failed call until one succeeds again."""
        return self._down is None

    # -- what a backend supplies -------------------------------------------------------------

    async def _run(self, fn: Callable[[], T], *, retry: bool = False) -> T:
        """Run `fn` on the store's worker thread. `retry`: `fn` only reads, so it may be run
        again on a fresh connection if the old one turns out to be dead."""
        raise NotImplementedError

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    # -- alerts ---------------------------------------------------------------------------

    async def add_alert(self, alert: Alert) -> None:
        def add() -> None:
            with self._transaction():
                self._execute(
                    "INSERT INTO alerts (id, symbol, condition, price, webhook, note, state, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert.id,
                        alert.symbol,
                        alert.condition,
                        alert.price,
                        alert.webhook,
                        alert.note,
                        alert.state,
                        alert.created_at,
                    ),
                )
                self._execute(_BUMP)

        await self._run(add)

    async def alerts(self) -> list[Alert]:
        def read() -> list[Alert]:
            rows = self._execute(_ALERT + " ORDER BY a.created_at DESC, a.id").fetchall()
            return [_alert(r) for r in rows]

        return await self._run(read, retry=True)

    async def alert(self, alert_id: str) -> Alert | None:
        def read() -> Alert | None:
            row = self._execute(_ALERT + " WHERE a.id = ?", (alert_id,)).fetchone()
            return None if row is None else _alert(row)

        return await self._run(read, retry=True)

    async def armed(self) -> list[Alert]:
        def read() -> list[Alert]:
            rows = self._execute(_ALERT + " WHERE a.state = 'armed'").fetchall()
            return [_alert(r) for r in rows]

        return await self._run(read, retry=True)

    async def changes(self) -> int:
        """A number that grows with every write to the alerts, by any server: one cheap read
        tells a server whether its book is out of date."""

        def read() -> int:
            revision: int = self._execute("SELECT revision FROM alert_changes").fetchone()[0]
            return revision

        return await self._run(read, retry=True)

    async def count_alerts(self) -> int:
        def read() -> int:
            count: int = self._execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
            return count

        return await self._run(read, retry=True)

    async def delete_alert(self, alert_id: str) -> bool:
        def delete() -> bool:
            with self._transaction():
                cursor = self._execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
                deleted = cursor.rowcount == 1
                if deleted:
                    self._execute(_BUMP)
            return deleted

        return await self._run(delete)

    async def fire(
        self, alert_id: str, fired_at: float, fired_price: str, delivery: Delivery | None
    ) -> bool:
        """Fire an armed alert and queue its delivery, in one transaction. False if it was not
        armed (fired already, by this server or another, or deleted): only one firing wins."""

        def fire() -> bool:
            with self._transaction():
                cursor = self._execute(
                    "UPDATE alerts SET state = 'fired', fired_at = ?, fired_price = ? "
                    "WHERE id = ? AND state = 'armed'",
                    (fired_at, fired_price, alert_id),
                )
                if cursor.rowcount != 1:
                    return False
                if delivery is not None:
                    self._execute(
                        "INSERT INTO deliveries (id, alert_id, url, state, attempts, created_at, "
                        "next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
                        (delivery.id, alert_id, delivery.url, fired_at, fired_at),
                    )
                self._execute(_BUMP)
            return True

        return await self._run(fire)

    # -- webhook deliveries -----------------------------------------------------------------

    async def claim_deliveries(
        self, claimant: str, now: float, until: float, limit: int
    ) -> list[tuple[Delivery, Alert]]:
        """Claim up to `limit` due deliveries for `claimant` until `until`, and return them with
        their alerts. A delivery another server holds a live claim on is not returned: each
        claim is a conditional UPDATE, so of two servers claiming at once only one gets it."""

        def claim() -> list[tuple[Delivery, Alert]]:
            candidates = self._execute(
                "SELECT id FROM deliveries WHERE " + _CLAIMABLE + " ORDER BY next_attempt_at "
                "LIMIT ?",
                (now, now, limit),
            ).fetchall()
            out = []
            for (delivery_id,) in candidates:
                with self._transaction():
                    cursor = self._execute(
                        "UPDATE deliveries SET claimed_by = ?, claimed_until = ? "
                        "WHERE id = ? AND " + _CLAIMABLE,
                        (claimant, until, delivery_id, now, now),
                    )
                    if cursor.rowcount != 1:
                        continue  # another server was quicker
                    row = self._execute(_DELIVERY + " WHERE id = ?", (delivery_id,)).fetchone()
                    delivery = _delivery(row)
                    alert = self._execute(
                        _ALERT + " WHERE a.id = ?", (delivery.alert_id,)
                    ).fetchone()
                if alert is not None:
                    out.append((delivery, _alert(alert)))
            return out

        return await self._run(claim)

    async def next_delivery_at(self) -> float | None:
        """When a pending delivery is next due, or its claim lapses, whichever is later."""

        def read() -> float | None:
            row = self._execute(
                "SELECT MIN(CASE WHEN claimed_until > next_attempt_at THEN claimed_until "
                "ELSE next_attempt_at END) FROM deliveries WHERE state = 'pending'"
            ).fetchone()
            value: float | None = row[0]
            return value

        return await self._run(read, retry=True)

    async def delivered(self, delivery_id: str, at: float) -> None:
        # Whoever holds the claim now: the target has it, and that is what counts.
        await self._update(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
            "delivered_at = ?, last_error = NULL, claimed_by = NULL, claimed_until = NULL "
            "WHERE id = ? AND state = 'pending'",
            (at, delivery_id),
        )

    async def retry_later(self, delivery_id: str, claimant: str, at: float, error: str) -> None:
        # Only while our claim stands: if it lapsed, another server's attempt decides.
        await self._update(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
            "claimed_by = NULL, claimed_until = NULL "
            "WHERE id = ? AND state = 'pending' AND claimed_by = ?",
            (at, error, delivery_id, claimant),
        )

    async def give_up(self, delivery_id: str, claimant: str, error: str) -> None:
        await self._update(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?, "
            "claimed_by = NULL, claimed_until = NULL "
            "WHERE id = ? AND state = 'pending' AND claimed_by = ?",
            (error, delivery_id, claimant),
        )

    async def deliveries(self) -> list[Delivery]:
        def read() -> list[Delivery]:
            return [_delivery(r) for r in self._execute(_DELIVERY + " ORDER BY id").fetchall()]

        return await self._run(read, retry=True)

    async def _update(self, sql: str, args: tuple[Any, ...]) -> None:
        def update() -> None:
            with self._transaction():
                self._execute(sql, args)

        await self._run(update)

    # -- portfolio --------------------------------------------------------------------------

    async def portfolio(self) -> tuple[str | None, list[Holding]]:
        def read() -> tuple[str | None, list[Holding]]:
            quote = self._execute(
                "SELECT value FROM preferences WHERE name = 'portfolio_quote'"
            ).fetchone()
            rows = self._execute("SELECT asset, amount, cost FROM holdings ORDER BY asset")
            return (None if quote is None else quote[0]), [Holding(*r) for r in rows.fetchall()]

        return await self._run(read, retry=True)

    async def set_portfolio(self, quote: str, holdings: list[Holding]) -> None:
        """Replace the whole portfolio at once."""

        def write() -> None:
            with self._transaction():
                self._execute("DELETE FROM holdings")
                if holdings:
                    self._executemany(
                        "INSERT INTO holdings (asset, amount, cost) VALUES (?, ?, ?)",
                        [(h.asset, h.amount, h.cost) for h in holdings],
                    )
                self._execute(
                    "INSERT INTO preferences (name, value) VALUES ('portfolio_quote', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (quote,),
                )

        await self._run(write)
