"""The PostgreSQL store: one database that several pricestream servers share (`--database`).

The queries are app.store.sql's, the same as SQLite's; the schema's version lives in the table
`pricestream_schema`, and migrations run under an advisory lock so that servers starting together
migrate once. Queries run on one worker thread with one psycopg connection, as the SQLite store
does: the shared query code stays synchronous and identical for both backends, and the event
loop never waits on the network (psycopg's async API would have meant a second copy of every
query). A connection that breaks (the server stopped, the network cut) makes every call raise
`StoreDown` with a sentence; the next call after a short pause connects again, so alerts and the
portfolio come back by themselves. Prices never touch the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.store.records import StoreDown, StoreError
from app.store.schema import MIGRATIONS, SCHEMA_VERSION
from app.store.sql import Cursor, SQLStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

# libpq connection options, unless the URL sets them: give up connecting after 3 s (a route
# answers 503 rather than hang), and notice a peer that vanished without closing (keepalives for
# an idle connection, tcp_user_timeout for one waiting on an answer).
_OPTIONS = {
    "connect_timeout": "3",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "application_name": "pricestream",
}
# After a failed connection, calls fail at once for this long rather than each trying again.
RECONNECT_PAUSE = 1.0
# pg_advisory_xact_lock key that serialises migrations between servers: any number of our own.
_MIGRATION_LOCK = 0x70726963  # "pric"


def describe(url: str) -> str:
    """The database a URL names, for messages: name, host and port, never the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "named by --database"
    dbname = params.get("dbname") or params.get("user") or "?"
    return f"{dbname!r} on {params.get('host') or 'localhost'}:{params.get('port') or 5432}"


def _reason(exc: BaseException) -> str:
    # libpq's messages run over several lines; a log line or an answer wants one.
    return " ".join(str(exc).split())


def _connect(url: str) -> psycopg.Connection[Any]:
    given = conninfo_to_dict(url)
    options = {k: v for k, v in _OPTIONS.items() if k not in given}
    return psycopg.connect(make_conninfo(url, **options), autocommit=True)


def open_postgres(url: str) -> PostgresStore:
    """Connect, migrate the schema, and return the store; StoreError with a sentence if the
    database cannot be reached or used. A database it cannot use is left unchanged."""
    name = describe(url)
    try:
        conn = _connect(url)
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot reach the database {name} ({_reason(exc)}); check --database and that "
            "PostgreSQL is running there"
        ) from None
    try:
        _migrate(conn, name)
    except StoreError:
        conn.close()
        raise
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(
            f"the database {name} cannot be prepared for pricestream ({_reason(exc)}); it was "
            "left unchanged: give pricestream a database of its own that it may create tables in"
        ) from None
    return PostgresStore(conn, url, name)


def _migrate(conn: psycopg.Connection[Any], name: str) -> None:
    # One transaction: a failure (or a newer schema) leaves the database as it was.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS pricestream_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM pricestream_schema").fetchone()
        version: int = 0 if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {name} was written by a newer pricestream (schema {version}; this "
                f"one knows up to {SCHEMA_VERSION}); it was left untouched: run that newer "
                "version, or point --database at another database"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO pricestream_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif version < SCHEMA_VERSION:
            conn.execute("UPDATE pricestream_schema SET version = %s", (SCHEMA_VERSION,))


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    # app.store.sql writes `?` (SQLite's style); psycopg wants `%s`. Our SQL has no other ? or %.
    return sql.replace("?", "%s")


class PostgresStore(SQLStore):
    """app.store.sql's queries over one psycopg connection, each run on the store's own thread,
    connecting again after the connection is lost."""

    def __init__(self, conn: psycopg.Connection[Any], url: str, name: str) -> None:
        self._conn: psycopg.Connection[Any] | None = conn
        self._url = url
        self.name = name
        self.kind = "postgresql"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._retry_at = 0.0  # monotonic time before which no new connection is tried

    async def _run(self, fn: Callable[[], T], *, retry: bool = False) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, fn, retry)

    def _call(self, fn: Callable[[], T], retry: bool) -> T:
        """On the worker thread: run `fn` on a live connection, or raise StoreDown."""
        reused = self._conn is not None and not (self._conn.closed or self._conn.broken)
        if not reused:
            self._reconnect()
        try:
            result = fn()
        except psycopg.OperationalError as exc:
            conn = self._conn
            # A connection idle since before an outage learns it is dead on its first use;
            # a read may then go again on a new one. A write is not repeated: it may have
            # committed before the answer was lost.
            if not (retry and reused and conn is not None and conn.broken):
                raise self._lost(exc) from None
            self._reconnect()
            try:
                result = fn()
            except psycopg.OperationalError as again:
                raise self._lost(again) from None
        if self._down is not None:
            logger.warning("database %s reachable again", self.name)
            self._down = None
        return result

    def _reconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if time.monotonic() < self._retry_at:
            raise StoreDown(self._sentence())
        try:
            self._conn = _connect(self._url)
        except psycopg.OperationalError as exc:
            self._retry_at = time.monotonic() + RECONNECT_PAUSE
            raise self._lost(exc) from None

    def _lost(self, exc: psycopg.OperationalError) -> StoreDown:
        if self._down is None:
            logger.warning(
                "database %s cannot be reached (%s); alerts and the portfolio answer 503 until "
                "it is back, prices carry on",
                self.name,
                _reason(exc),
            )
        self._down = _reason(exc)
        if self._conn is not None and self._conn.broken:
            self._conn.close()
            self._conn = None
        return StoreDown(self._sentence())

    def _sentence(self) -> str:
        return (
            f"the database {self.name} cannot be reached right now; alerts and the portfolio "
            "are back as soon as it is (prices carry on)"
        )

    def _live(self) -> psycopg.Connection[Any]:
        assert self._conn is not None, "queries run only inside _call, on a live connection"
        return self._conn

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._live().execute(_placeholders(sql), args)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._live().cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._live().transaction():
            yield

    def close(self) -> None:
        """Close at once, before any query ran (the CLI's check before start-up)."""
        if self._conn is not None:
            self._conn.close()
        self._thread.shutdown(wait=True)

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=True)
