"""Stored state: alerts, their firings and webhook deliveries, and the portfolio.

`Store` is the small interface the rest of the app uses. `open_store` opens the SQLite file in
the data folder, or the PostgreSQL database that `--database` names (one database for several
servers), running the schema's migrations, or raises `StoreError` with a sentence saying what is
wrong and what to do; it never changes a database it cannot use.
"""

from __future__ import annotations

from app.store.interface import Store
from app.store.postgres import PostgresStore, open_postgres
from app.store.records import Alert, Delivery, Holding, StoreDown, StoreError
from app.store.sqlite import SQLiteStore, open_sqlite

__all__ = [
    "Alert",
    "Delivery",
    "Holding",
    "Store",
    "StoreDown",
    "StoreError",
    "check_store",
    "open_store",
]


def open_store(data_dir: str, database: str = "") -> SQLiteStore | PostgresStore:
    """The store `--database` names, or the SQLite file in `data_dir` when it names none."""
    return open_postgres(database) if database else open_sqlite(data_dir)


def check_store(data_dir: str, database: str = "") -> None:
    """Open the store and close it again: StoreError with its sentence if it cannot be used
    (the CLI asks before start-up, so a bad database is one line, not a traceback)."""
    open_store(data_dir, database).close()
