"""Every URL the server writes into a page or a snippet, built in one place.

Paths are relative (our own pages), or absolute with `base` (snippets for other sites). Lists of
symbols and topics keep their commas and colons readable, as people type them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

from app.topics.key import DEFAULT_INTERVAL, Topic

_SAFE = ",:"


def _query(values: Mapping[str, str]) -> str:
    return urlencode({k: v for k, v in values.items() if v}, safe=_SAFE)


def sse_url(topics: Iterable[Topic], base: str = "") -> str:
    """The one event stream a page (or a host page, with `base`) opens for `topics`; a list of
    price cards only uses the shorter `symbols=` form."""
    topics = tuple(topics)
    if all(t.kind == "price" for t in topics):
        return base + "/sse?" + _query({"symbols": ",".join(t.symbol for t in topics)})
    return base + "/sse?" + _query({"topics": ",".join(t.name for t in topics)})


def board_url(symbols: Iterable[str]) -> str:
    return "/?" + _query({"symbols": ",".join(symbols)})


def market_url(symbol: str, interval: str = DEFAULT_INTERVAL) -> str:
    return f"/market/{symbol}" + ("" if interval == DEFAULT_INTERVAL else f"?interval={interval}")


def embed_path(symbols: Iterable[str], query: str = "") -> str:
    return "/embed/" + ",".join(symbols) + (f"?{query}" if query else "")


def builder_url(symbols: Iterable[str], query: str = "") -> str:
    return "/embed?" + _query({"symbols": ",".join(symbols)}) + (f"&{query}" if query else "")


def static_url(path: str, base: str = "") -> str:
    return f"{base}/static/{path}"
