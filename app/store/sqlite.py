"""The SQLite store: one file in the data folder, WAL mode, the schema's migrations at start-up.

Every query runs on one worker thread that owns the connection, so the event loop never waits on
the disk and SQLite never sees two threads. The queries themselves are app.store.sql's, shared
with PostgreSQL. `synchronous=FULL` makes a committed transaction survive a kill -9 and a power
cut. Several servers on one machine may share the file: SQLite's locks make each transaction
whole, and the conditional UPDATEs of app.store.sql do the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from app.store.records import StoreDown, StoreError
from app.store.schema import MIGRATIONS, SCHEMA_VERSION
from app.store.sql import Cursor, SQLStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
FILENAME = "pricestream.sqlite3"
_HEADER = b"SQLite format 3\x00"


def open_sqlite(folder: str) -> SQLiteStore:
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
    # Another server on the same file may hold the write lock for a moment.
    conn.execute("PRAGMA busy_timeout = 5000")
    with _transaction(conn):
        # Read again under the write lock: another server may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
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


class SQLiteStore(SQLStore):
    """app.store.sql's queries over one SQLite connection, each run on the store's own thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.name = str(path)
        self.kind = "sqlite"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def _run(self, fn: Callable[[], T], *, retry: bool = False) -> T:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._thread, fn)
        except sqlite3.OperationalError as exc:
            # Locked past busy_timeout by another server, the disk gone or full: the file
            # is fine, it cannot be used at this moment.
            if self._down is None:
                logger.warning("database file %s cannot be used (%s)", self.name, exc)
            self._down = str(exc)
            raise StoreDown(
                f"the database file {self.name!r} cannot be used right now ({exc}); alerts and "
                "the portfolio are back as soon as it can"
            ) from exc
        if self._down is not None:
            logger.warning("database file %s usable again", self.name)
            self._down = None
        return result

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, args)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return _transaction(self.conn)

    def close(self) -> None:
        """Close at once, from the thread that opened it, before any query ran (the CLI's
        check before start-up)."""
        self.conn.close()
        self._thread.shutdown(wait=True)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self.conn.close)
        self._thread.shutdown(wait=True)
