"""The schema, as migrations in SQL that SQLite and PostgreSQL both accept: one list, two backends.

Migration N (counting from 1) takes a database from version N-1 to N. Each backend keeps the
number of migrations that have run in its own way (SQLite in `PRAGMA user_version`, PostgreSQL in
the table `pricestream_schema`) and runs the missing ones in one transaction at start-up. A
database with a higher number was written by a newer pricestream, and is refused untouched.
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: alerts, their webhook deliveries, the portfolio.
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
    # 2: several servers on one database. A delivery is claimed for a while (a lease) by the
    # server attempting it, so no two attempt it at once; and one counter, bumped by every
    # write to the alerts, tells the others cheaply that their books are out of date.
    (
        "ALTER TABLE deliveries ADD COLUMN claimed_by TEXT",
        "ALTER TABLE deliveries ADD COLUMN claimed_until DOUBLE PRECISION",
        """CREATE TABLE alert_changes (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision BIGINT NOT NULL
        )""",
        "INSERT INTO alert_changes (id, revision) VALUES (1, 0)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
