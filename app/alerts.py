"""Price alerts: armed thresholds kept sorted per symbol and side, fired by live trades.

`AlertBook` is the index: for each symbol, the "above" thresholds and the "below" thresholds in
ascending order, so a trade at price p touches only what it crossed (a bisect, then the alerts
past it): a million armed alerts cost a trade what one does. `Alerts` owns the book and the
subscriptions: a symbol with armed alerts hears its `@trade` stream through the hub, viewers or
not. A crossing takes the alert out of the book at once (it cannot be crossed twice), and the
firing is committed to the store before anyone is told: then the owner's pages get an `alert`
event and the webhook deliverer is woken. Missed prices are not guessed: after a gap, the first
live trade past a threshold fires it, and `fired_price` says which.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from app.hub import Hub
from app.market import Message, Trade
from app.store import Alert, Delivery, Store, StoreDown

logger = logging.getLogger(__name__)
_LAST = "\U0010ffff"  # sorts after every id: bisect to the end of one threshold's alerts


def trade_stream(symbol: str) -> str:
    return f"{symbol.lower()}@trade"


class AlertBook:
    """Armed alerts by symbol and side, thresholds ascending."""

    def __init__(self) -> None:
        self.above: dict[str, list[tuple[Decimal, str]]] = {}
        self.below: dict[str, list[tuple[Decimal, str]]] = {}
        self.where: dict[str, tuple[str, str, tuple[Decimal, str]]] = {}  # id -> its place

    def __len__(self) -> int:
        return len(self.where)

    def add(self, alert: Alert) -> None:
        side = self.above if alert.condition == "above" else self.below
        key = (Decimal(alert.price), alert.id)
        bisect.insort(side.setdefault(alert.symbol, []), key)
        self.where[alert.id] = (alert.symbol, alert.condition, key)

    def remove(self, alert_id: str) -> None:
        place = self.where.pop(alert_id, None)
        if place is None:
            return
        symbol, condition, key = place
        side = self.above if condition == "above" else self.below
        keys = side[symbol]
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            del keys[i]
        if not keys:
            del side[symbol]

    def crossed(self, symbol: str, price: Decimal) -> list[str]:
        """Take out and return every alert that `price` reached: above at or under it, below
        at or over it."""
        fired: list[str] = []
        keys = self.above.get(symbol)
        if keys and keys[0][0] <= price:
            i = bisect.bisect_right(keys, (price, _LAST))
            fired += [alert_id for _, alert_id in keys[:i]]
            del keys[:i]
            if not keys:
                del self.above[symbol]
        keys = self.below.get(symbol)
        if keys and keys[-1][0] >= price:
            i = bisect.bisect_left(keys, (price, ""))
            fired += [alert_id for _, alert_id in keys[i:]]
            del keys[i:]
            if not keys:
                del self.below[symbol]
        for alert_id in fired:
            del self.where[alert_id]
        return fired

    def symbols(self) -> set[str]:
        return set(self.above) | set(self.below)


class Alerts:
    """Armed alerts, evaluated on every trade of their symbols. `async with Alerts(...)`.

    Several servers may share one database: each keeps its own book, and a task looks at the
    store every `poll` seconds (one small read) to learn of alerts the others made, deleted or
    fired. Two servers hearing the same trade both try to fire; the store's conditional UPDATE
    lets exactly one win, and both tell their owner's pages.
    """

    def __init__(
        self,
        store: Store,
        hub: Hub,
        on_fired: Callable[[Alert], None] = lambda alert: None,
        poll: float = 2.0,
    ) -> None:
        self.store = store
        self.hub = hub
        self.on_fired = on_fired  # after a firing is committed: tell pages, wake deliveries
        self.poll = poll
        self.book = AlertBook()
        self.armed: dict[str, Alert] = {}
        self.fired_count = 0  # firings this server won
        self._firing: set[str] = set()  # out of the book, their firing not yet settled
        self._revision: int | None = None  # the store's change counter the book reflects
        # Held by whatever changes the book from the store's answers (create, delete, a
        # firing's outcome, a sync), so that an older answer never undoes a newer one.
        self._lock = asyncio.Lock()
        self._listening: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Alerts:
        await self.sync()
        logger.info("alerts: %d armed", len(self.armed))
        self._follower = asyncio.create_task(self._follow(), name="alerts-follow")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Stop following the store first, then let firings under way finish: each is one
        # short transaction, and a firing cut in half would be rolled back anyway and fire
        # again on the next trade.
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.wait([self._follower])
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for symbol in list(self._listening):
            self.hub.unlisten(trade_stream(symbol), self._on_trade)
        self._listening.clear()

    async def create(self, alert: Alert) -> Alert:
        async with self._lock:
            await self.store.add_alert(alert)
            self._arm(alert)
        return alert

    async def delete(self, alert_id: str) -> bool:
        async with self._lock:
            deleted = await self.store.delete_alert(alert_id)
            self._disarm(alert_id)
        return deleted

    async def sync(self) -> None:
        """Make the book match the store's armed alerts, if anything changed since last time
        (alerts made, deleted or fired by another server sharing the database)."""
        async with self._lock:
            revision = await self.store.changes()
            if revision == self._revision:
                return
            # Read after the counter: a change in between is seen again on the next look.
            stored = {alert.id: alert for alert in await self.store.armed()}
            gone = [self.armed[i] for i in self.armed if i not in stored]
            for alert in gone:
                self._disarm(alert.id)
            for alert in stored.values():
                if alert.id not in self.armed and alert.id not in self._firing:
                    self._arm(alert)
            self._revision = revision
            for alert in gone:
                # Fired elsewhere: this server's pages hear of it too, and its deliverer may
                # take the delivery over if the other server dies before making it.
                now = await self.store.alert(alert.id)
                if now is not None and now.state == "fired":
                    self.on_fired(now)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.sync()
            except StoreDown:
                pass  # the store logged it; the next look tries again

    def _arm(self, alert: Alert) -> None:
        self.armed[alert.id] = alert
        self.book.add(alert)
        self._listen_or_not(alert.symbol)

    def _disarm(self, alert_id: str) -> None:
        alert = self.armed.pop(alert_id, None)
        if alert is not None:
            self.book.remove(alert_id)
            self._listen_or_not(alert.symbol)

    def _listen_or_not(self, symbol: str) -> None:
        """Hear a symbol's trades exactly while it has armed alerts."""
        wanted = symbol in self.book.symbols()
        if wanted and symbol not in self._listening:
            self._listening.add(symbol)
            self.hub.listen(trade_stream(symbol), self._on_trade)
        elif not wanted and symbol in self._listening:
            self._listening.discard(symbol)
            self.hub.unlisten(trade_stream(symbol), self._on_trade)

    def _on_trade(self, message: Message) -> None:
        trade = message.payload
        if not isinstance(trade, Trade):
            return
        crossed = self.book.crossed(trade.symbol, Decimal(trade.price))
        if not crossed:
            return
        # Only trades made after an alert was created may fire it.
        too_early = [i for i in crossed if self.armed[i].created_at * 1000 > trade.trade_time]
        for alert_id in too_early:
            self.book.add(self.armed[alert_id])
        firing = [self.armed.pop(i) for i in crossed if i not in too_early]
        for alert in firing:
            self._firing.add(alert.id)
            task = asyncio.create_task(self._fire(alert, trade), name=f"fire {alert.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._listen_or_not(trade.symbol)

    async def _fire(self, alert: Alert, trade: Trade) -> None:
        now = time.time()
        delivery = (
            None
            if alert.webhook is None
            else Delivery(uuid.uuid4().hex, alert.id, alert.webhook, "pending", 0, now, now)
        )
        async with self._lock:
            self._firing.discard(alert.id)
            try:
                won = await self.store.fire(alert.id, now, trade.price, delivery)
                settled = None if won else await self.store.alert(alert.id)
            except StoreDown:
                # Not stored, so not fired: it goes back in the book and the next trade past
                # it fires it, once the database is back (the store logged the outage).
                self._arm(alert)
                return
            except Exception:
                # Anything else the store raised (a damaged file): the same, said loudly.
                logger.exception(
                    "alerts: could not store the firing of %s; it stays armed", alert.id
                )
                self._arm(alert)
                return
        if not won:
            # Deleted meanwhile (nothing to tell), or fired by another server that heard the
            # same trade: its firing is the one, and this server's pages hear of it too.
            if settled is not None and settled.state == "fired":
                self.on_fired(settled)
            return
        self.fired_count += 1
        fired = replace(
            alert,
            state="fired",
            fired_at=now,
            fired_price=trade.price,
            delivery=None if delivery is None else "pending",
        )
        logger.info(
            "alert %s fired: %s %s %s at %s",
            alert.id,
            alert.symbol,
            alert.condition,
            alert.price,
            trade.price,
        )
        self.on_fired(fired)
