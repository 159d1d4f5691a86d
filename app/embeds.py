"""Embeds: the framed widget page, its options, and the snippet builder.

`GET /embed/<SYMBOLS>` is a small standalone page for an `<iframe>` (one symbol, or several
sharing one SSE connection), shaped by query options: a price card (full or compact), or one
market panel (chart, book, trades). `GET /embed` is the builder: pick symbols and options, see
the live preview, copy an iframe snippet or an htmx snippet for the host page.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from app.errors import InputError
from app.pages import directory_of, echo, error_page, hub_of, page, public_base
from app.topics.key import DEFAULT_INTERVAL, SWITCH_INTERVALS, Topic, check_interval
from app.urls import embed_path, sse_url, static_url

THEMES = ("auto", "light", "dark")
VIEWS = ("full", "compact", "chart", "book", "trades")
MAX_LINK_LENGTH = 2000
# Rough heights of one row of each view, for the iframe snippet's suggested height (px).
ROW_HEIGHT = {"full": 170, "compact": 84, "chart": 420, "book": 880, "trades": 660}
# What the iframe snippet's title says, for screen readers.
VIEW_TITLES = {
    "full": "price",
    "compact": "price",
    "chart": "chart",
    "book": "order book",
    "trades": "trades",
}
# Price cards sit side by side; a market panel takes the whole width.
PER_ROW = {"full": 3, "compact": 3, "chart": 1, "book": 1, "trades": 1}


class EmbedError(InputError):
    """An embed option we cannot use; the message is a sentence for a 400."""


@dataclass(frozen=True)
class EmbedOptions:
    """How an embed looks: theme, background, which view (and chart interval), and a
    click-through link."""

    theme: str = "auto"
    transparent: bool = False
    view: str = "full"
    interval: str = DEFAULT_INTERVAL
    link: str = ""

    @property
    def compact(self) -> bool:
        return self.view == "compact"

    def topic(self, symbol: str) -> Topic:
        """What one symbol shows in this view."""
        if self.view in ("full", "compact"):
            return Topic("price", symbol)
        return Topic(self.view, symbol, self.interval if self.view == "chart" else "")

    @classmethod
    def from_query(cls, params: QueryParams) -> EmbedOptions:
        theme = params.get("theme", "auto") or "auto"
        if theme not in THEMES:
            raise EmbedError(f"theme {theme[:20]!r} is not one of {', '.join(THEMES)}")
        bg = params.get("bg", "solid") or "solid"
        if bg not in ("solid", "transparent"):
            raise EmbedError(f"bg {bg[:20]!r} is not solid or transparent")
        view = params.get("view", "full") or "full"
        if view not in VIEWS:
            raise EmbedError(f"view {view[:20]!r} is not one of {', '.join(VIEWS)}")
        # Checked whatever the view (a typo deserves a 400), used by the chart alone: the
        # builder's form sends its interval with every view.
        interval = check_interval(params.get("interval") or DEFAULT_INTERVAL)
        if view != "chart":
            interval = DEFAULT_INTERVAL
        link = (params.get("link") or "").strip()
        if link:
            parts = urlsplit(link)
            if (
                len(link) > MAX_LINK_LENGTH
                or parts.scheme not in ("http", "https")
                or not parts.netloc
            ):
                raise EmbedError("link must be an http:// or https:// address")
        return cls(theme, bg == "transparent", view, interval, link)

    def query(self) -> str:
        """The options that differ from the defaults, as a query string ('' when none)."""
        values = {}
        if self.theme != "auto":
            values["theme"] = self.theme
        if self.transparent:
            values["bg"] = "transparent"
        if self.view != "full":
            values["view"] = self.view
        if self.interval != DEFAULT_INTERVAL:
            values["interval"] = self.interval
        if self.link:
            values["link"] = self.link
        return urlencode(values)


async def embed(request: Request) -> Response:
    """The widget for an iframe: `/embed/BTCUSDT` or `/embed/BTCUSDT,ETHUSDT?theme=dark`."""
    try:
        symbols = directory_of(request).check_list(request.path_params["symbols"])
        options = EmbedOptions.from_query(request.query_params)
    except InputError as exc:
        return error_page(request, 400, "Bad embed", str(exc))
    hub = hub_of(request)
    topics = [options.topic(s) for s in symbols]
    items = [{"event": t.event, "html": await hub.fragment(t)} for t in topics]
    return page(
        request,
        "embed",
        frameable=True,
        items=items,
        symbols=symbols,
        options=options,
        theme=options.theme,
        sse_url=sse_url(topics),
        status_html=hub.status_html,
    )


async def builder(request: Request) -> Response:
    """Pick symbols and options; see the embed live; copy a snippet."""
    params = request.query_params
    error = None
    raw_symbols = params.get("symbols") or "BTCUSDT"
    try:
        symbols = directory_of(request).check_list(raw_symbols)
        options = EmbedOptions.from_query(params)
    except InputError as exc:
        error = str(exc)
        symbols, options = ("BTCUSDT",), EmbedOptions()
    base = public_base(request)
    rows = -(-len(symbols) // PER_ROW[options.view])
    height = rows * ROW_HEIGHT[options.view] + 22
    topics = [options.topic(s) for s in symbols]
    return page(
        request,
        "builder",
        400 if error else 200,
        error=error,
        raw_symbols=echo(raw_symbols, 600),
        options=options,
        symbols=symbols,
        base=base,
        views=VIEWS,
        intervals=SWITCH_INTERVALS,
        topics=topics,
        preview_src=embed_path(symbols, options.query()),
        iframe_src=base + embed_path(symbols, options.query()),
        iframe_height=height,
        view_title=VIEW_TITLES[options.view],
        sse_url=sse_url(topics, base),
        static_base=static_url("", base),
    )
