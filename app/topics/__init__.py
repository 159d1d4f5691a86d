"""Topics: the kinds of live panel, each a module of its own, and the table that names them."""

from __future__ import annotations

from app.symbols import SymbolInfo
from app.topics.book import BookPanel
from app.topics.chart import ChartPanel
from app.topics.key import Topic
from app.topics.panel import Panel
from app.topics.price import PricePanel
from app.topics.trades import TradesPanel

PANELS: dict[str, type[Panel]] = {
    "price": PricePanel,
    "book": BookPanel,
    "trades": TradesPanel,
    "chart": ChartPanel,
}


def make_panel(topic: Topic, info: SymbolInfo | None) -> Panel:
    return PANELS[topic.kind](topic, info)
