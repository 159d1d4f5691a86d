"""pricestream: live Binance prices pushed to htmx pages over server-sent events."""

__version__ = "0.1.0"
