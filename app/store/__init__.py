"""Stored state: alerts, their firings and webhook deliveries, and the portfolio.

`Store` is the small interface the rest of the app uses, written so that PostgreSQL could take
SQLite's place for several servers (SQL both accept; one conditional UPDATE decides a firing, so
two servers can never both fire one alert). `open_store` opens the SQLite file in the data
folder, running the schema's migrations, or raises `StoreError` with a sentence saying what is
wrong and what to do; it never overwrites a file it cannot read.
"""

from __future__ import annotations

from app.store.interface import Store
from app.store.records import Alert, Delivery, Holding, StoreError
from app.store.sqlite import open_store

__all__ = ["Alert", "Delivery", "Holding", "Store", "StoreError", "open_store"]
