"""The portfolio valued live, and its feed to the owner's portfolio page at a human rate.

Each holding is valued in the quote asset through the pair Binance lists for it (BTC via
BTCUSDT), from the hub's live prices; an asset with no such pair is shown unpriced, never guessed
through a third currency. `PortfolioFeed` re-values once a second while an owner's portfolio
page is open and sends the table (SSE event `portfolio`) only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from app.hub import Hub
from app.render import Renderer
from app.store import Store, StoreDown
from app.symbols import SymbolDirectory
from app.topics.key import price

logger = logging.getLogger(__name__)

# How long valuing waits for first prices of assets nobody was watching.
PRICE_WAIT = 3.0
# How often an open portfolio page is re-valued (seconds): a human rate.
FEED_INTERVAL = 1.0


async def value_portfolio(
    store: Store, directory: SymbolDirectory, hub: Hub, wait: float = PRICE_WAIT
) -> dict[str, Any]:
    """The holdings with each asset's live price, value, share and 24 h change, and the total,
    all as decimal strings."""
    quote, holdings = await store.portfolio()
    quote = quote or "USDT"
    symbols = {
        h.asset: f"{h.asset}{quote}" for h in holdings if directory.info(f"{h.asset}{quote}")
    }
    found = await asyncio.gather(*(hub.message(price(s), wait=wait) for s in symbols.values()))
    prices = dict(zip(symbols, found, strict=True))
    rows, total = [], Decimal(0)
    for h in holdings:
        change = None
        if h.asset == quote:
            value: Decimal | None = Decimal(h.amount)
            last: str | None = "1"
        elif h.asset in prices and prices[h.asset]["price"] is not None:
            last = prices[h.asset]["price"]
            value = Decimal(h.amount) * Decimal(str(last))
            change = prices[h.asset]["change_percent"]
        else:
            value, last = None, None
        if value is not None:
            total += value
        rows.append(
            {
                "asset": h.asset,
                "amount": h.amount,
                "cost": h.cost,
                "symbol": symbols.get(h.asset),
                "price": last,
                "value": None if value is None else str(value),
                "change_percent": change,
            }
        )
    for row in rows:
        row["share"] = (
            None
            if row["value"] is None or not total
            else str((Decimal(row["value"]) / total * 100).quantize(Decimal("0.01")))
        )
    return {"quote": quote, "holdings": rows, "total": str(total)}


class PortfolioFeed:
    """Pushes the valued portfolio to open portfolio pages. `async with PortfolioFeed(...)`."""

    def __init__(
        self, store: Store, directory: SymbolDirectory, hub: Hub, renderer: Renderer
    ) -> None:
        self.store, self.directory, self.hub, self.renderer = store, directory, hub, renderer
        self._task: asyncio.Task[None] | None = None
        self._last = ""

    async def __aenter__(self) -> PortfolioFeed:
        self._task = asyncio.create_task(self._run(), name="portfolio-feed")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FEED_INTERVAL)
            watching = [s for s in self.hub.subscribers if s.portfolio]
            if not watching:
                self._last = ""
                continue
            try:
                portfolio = await value_portfolio(self.store, self.directory, self.hub, wait=0)
            except StoreDown:
                continue  # the page keeps its last table; the store logged the outage
            html = self.renderer.fragment("portfolio", portfolio=portfolio)
            if html != self._last:
                self._last = html
                self.hub.tell_portfolio(html)
