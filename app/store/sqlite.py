"""The SQLite store: one file in the data folder, WAL mode, versioned migrations at start-up.

Every query runs on one worker thread that owns the connection, so the event loop never waits on
the disk and SQLite never sees two threads. Writes that must happen together (a firing and its
delivery) are one transaction; a firing is a conditional UPDATE that only an armed alert passes,
so an alert can never fire twice, whoever else tries. `synchronous=FULL` makes a committed
transaction survive a kill -9 and a power cut. The SQL is plain enough for PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from app.store.records import Alert, Delivery, Holding, StoreError

T = TypeVar("T")
FILENAME = "pricestream.sqlite3"
_HEADER = b"SQLite format 3\x00"

# The schema, one migration per version; `PRAGMA user_version` says how many have run.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            symbol TEXT NOT NULL,
            condition TEXT NOT NULL CHECK (condition IN ('above', 'below')),
            price TEXT NOT NULL,
            webhook TEXT,
            note TEXT,
            state TEXT NOT NULL CHECK (state IN ('armed', 'fired')),
            created_at DOUBLE PRECISION NOT NULL,
            fired_at DOUBLE PRECISION,
            fired_price TEXT
        )""",
        "CREATE INDEX alerts_armed ON alerts (state, symbol)",
        """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            alert_id TEXT NOT NULL UNIQUE REFERENCES alerts (id) ON DELETE CASCADE,
            url TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            last_error TEXT,
            delivered_at DOUBLE PRECISION
        )""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at)",
        """CREATE TABLE holdings (
            asset TEXT PRIMARY KEY,
            amount TEXT NOT NULL,
            cost TEXT
        )""",
        "CREATE TABLE preferences (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_ALERT = (
    "SELECT a.id, a.symbol, a.condition, a.price, a.webhook, a.note, a.state, a.created_at, "
    "a.fired_at, a.fired_price, d.state FROM alerts a LEFT JOIN deliveries d ON d.alert_id = a.id"
)
_DELIVERY = (
    "SELECT id, alert_id, url, state, attempts, created_at, next_attempt_at, last_error "
    "FROM deliveries"
)


def open_store(folder: str) -> SQLiteStore:
    """Open (or create) the store in the folder `folder`; StoreError with a sentence if it
    cannot be used. A file that is not ours to change is left exactly as it is."""
    data_dir = Path(folder).expanduser()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the data folder {str(data_dir)!r} ({exc.strerror}); "
            "choose another with --data-dir"
        ) from None
    path = data_dir / FILENAME
    if not _writable(data_dir) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(
            f"the data folder {str(data_dir)!r} is read-only; pricestream keeps alerts and the "
            "portfolio there: make it writable, or choose another with --data-dir"
        )
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            if f.read(len(_HEADER)) != _HEADER:
                raise StoreError(
                    f"{str(path)!r} is not a SQLite database (damaged, or not ours); it was left "
                    "untouched: move it aside to start afresh, or restore it from a backup"
                )
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            _prepare(conn, path)
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{str(path)!r} cannot be read as a database ({exc}); it was left untouched: move it "
            "aside to start afresh, or restore it from a backup"
        ) from None
    return SQLiteStore(conn, path)


def _writable(folder: Path) -> bool:
    """Can we make files here? Tried for real: permission bits do not tell (root, read-only
    mounts), and SQLite needs its journal files beside the database."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    # quick_check reads every page: a damaged file is refused here, not halfway through a write.
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise StoreError(
            f"{str(path)!r} is damaged ({check}); it was left untouched: restore it from a "
            "backup, or move it aside to start afresh"
        )
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{str(path)!r} was written by a newer pricestream (schema {version}; this one knows "
            f"up to {SCHEMA_VERSION}); it was left untouched: run that newer version, or choose "
            "another --data-dir"
        )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    for number in range(version, SCHEMA_VERSION):
        with _transaction(conn):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE: take the write lock at the start, so two writers queue instead of deadlocking.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _alert(row: tuple[Any, ...]) -> Alert:
    return Alert(*row)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    return Delivery(*row)


class SQLiteStore:
    """Async methods over one SQLite connection, each run on the store's own thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def aclose(self) -> None:
        await self._run(self.conn.close)
        self._thread.shutdown(wait=True)

    # -- alerts ---------------------------------------------------------------------------

    async def add_alert(self, alert: Alert) -> None:
        def add() -> None:
            with _transaction(self.conn):
                self.conn.execute(
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

        await self._run(add)

    async def alerts(self) -> list[Alert]:
        def read() -> list[Alert]:
            rows = self.conn.execute(_ALERT + " ORDER BY a.created_at DESC, a.id").fetchall()
            return [_alert(r) for r in rows]

        return await self._run(read)

    async def alert(self, alert_id: str) -> Alert | None:
        def read() -> Alert | None:
            row = self.conn.execute(_ALERT + " WHERE a.id = ?", (alert_id,)).fetchone()
            return None if row is None else _alert(row)

        return await self._run(read)

    async def armed(self) -> list[Alert]:
        def read() -> list[Alert]:
            rows = self.conn.execute(_ALERT + " WHERE a.state = 'armed'").fetchall()
            return [_alert(r) for r in rows]

        return await self._run(read)

    async def count_alerts(self) -> int:
        def read() -> int:
            count: int = self.conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
            return count

        return await self._run(read)

    async def delete_alert(self, alert_id: str) -> bool:
        def delete() -> bool:
            with _transaction(self.conn):
                cursor = self.conn.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            return cursor.rowcount == 1

        return await self._run(delete)

    async def fire(
        self, alert_id: str, fired_at: float, fired_price: str, delivery: Delivery | None
    ) -> bool:
        """Fire an armed alert and queue its delivery, in one transaction. False if it was not
        armed (fired already, or deleted): only one firing can ever win."""

        def fire() -> bool:
            with _transaction(self.conn):
                cursor = self.conn.execute(
                    "UPDATE alerts SET state = 'fired', fired_at = ?, fired_price = ? "
                    "WHERE id = ? AND state = 'armed'",
                    (fired_at, fired_price, alert_id),
                )
                if cursor.rowcount != 1:
                    return False
                if delivery is not None:
                    self.conn.execute(
                        "INSERT INTO deliveries (id, alert_id, url, state, attempts, created_at, "
                        "next_attempt_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
                        (delivery.id, alert_id, delivery.url, fired_at, fired_at),
                    )
            return True

        return await self._run(fire)

    # -- webhook deliveries -----------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[tuple[Delivery, Alert]]:
        def read() -> list[tuple[Delivery, Alert]]:
            rows = self.conn.execute(
                _DELIVERY + " WHERE state = 'pending' AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
            out = []
            for row in rows:
                delivery = _delivery(row)
                alert = self.conn.execute(
                    _ALERT + " WHERE a.id = ?", (delivery.alert_id,)
                ).fetchone()
                if alert is not None:
                    out.append((delivery, _alert(alert)))
            return out

        return await self._run(read)

    async def next_delivery_at(self) -> float | None:
        def read() -> float | None:
            row = self.conn.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'"
            ).fetchone()
            value: float | None = row[0]
            return value

        return await self._run(read)

    async def delivered(self, delivery_id: str, at: float) -> None:
        await self._update(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
            "delivered_at = ?, last_error = NULL WHERE id = ?",
            (at, delivery_id),
        )

    async def retry_later(self, delivery_id: str, at: float, error: str) -> None:
        await self._update(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND state = 'pending'",
            (at, error, delivery_id),
        )

    async def give_up(self, delivery_id: str, error: str) -> None:
        await self._update(
            "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = ? "
            "WHERE id = ? AND state = 'pending'",
            (error, delivery_id),
        )

    async def deliveries(self) -> list[Delivery]:
        def read() -> list[Delivery]:
            return [_delivery(r) for r in self.conn.execute(_DELIVERY).fetchall()]

        return await self._run(read)

    async def _update(self, sql: str, args: tuple[Any, ...]) -> None:
        def update() -> None:
            with _transaction(self.conn):
                self.conn.execute(sql, args)

        await self._run(update)

    # -- portfolio --------------------------------------------------------------------------

    async def portfolio(self) -> tuple[str | None, list[Holding]]:
        def read() -> tuple[str | None, list[Holding]]:
            quote = self.conn.execute(
                "SELECT value FROM preferences WHERE name = 'portfolio_quote'"
            ).fetchone()
            rows = self.conn.execute(
                "SELECT asset, amount, cost FROM holdings ORDER BY asset"
            ).fetchall()
            return (None if quote is None else quote[0]), [Holding(*r) for r in rows]

        return await self._run(read)

    async def set_portfolio(self, quote: str, holdings: list[Holding]) -> None:
        """Replace the whole portfolio at once."""

        def write() -> None:
            with _transaction(self.conn):
                self.conn.execute("DELETE FROM holdings")
                self.conn.executemany(
                    "INSERT INTO holdings (asset, amount, cost) VALUES (?, ?, ?)",
                    [(h.asset, h.amount, h.cost) for h in holdings],
                )
                self.conn.execute(
                    "INSERT INTO preferences (name, value) VALUES ('portfolio_quote', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (quote,),
                )

        await self._run(write)
