"""Embeds: the framed widget page, its options, and the snippet builder.

`GET /embed/<SYMBOLS>` is a small standalone page for an `<iframe>` (one symbol, or several
sharing one SSE connection), shaped by query options. `GET /embed` is the builder: pick symbols
and options, see the live preview, copy an iframe snippet or an htmx snippet for the host page.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from app.pages import directory_of, echo, error_page, hub_of, page, public_base, sse_url
from app.symbols import SymbolError

THEMES = ("auto", "light", "dark")
MAX_LINK_LENGTH = 2000
# Rough heights of one row of cards, for the iframe snippet's suggested height (px).
ROW_HEIGHT = {False: 150, True: 84}
CARDS_PER_ROW = 3


class EmbedError(ValueError):
    """An embed option we cannot use; the message is a sentence for a 400."""


@dataclass(frozen=True)
class EmbedOptions:
    """How an embed looks: theme, background, full or compact, and a click-through link."""

    theme: str = "auto"
    transparent: bool = False
    compact: bool = False
    link: str = ""

    @classmethod
    def from_query(cls, params: QueryParams) -> EmbedOptions:
        theme = params.get("theme", "auto") or "auto"
        if theme not in THEMES:
            raise EmbedError(f"theme {theme[:20]!r} is not one of {', '.join(THEMES)}")
        bg = params.get("bg", "solid") or "solid"
        if bg not in ("solid", "transparent"):
            raise EmbedError(f"bg {bg[:20]!r} is not solid or transparent")
        view = params.get("view", "full") or "full"
        if view not in ("full", "compact"):
            raise EmbedError(f"view {view[:20]!r} is not full or compact")
        link = (params.get("link") or "").strip()
        if link:
            parts = urlsplit(link)
            if (
                len(link) > MAX_LINK_LENGTH
                or parts.scheme not in ("http", "https")
                or not parts.netloc
            ):
                raise EmbedError("link must be an http:// or https:// address")
        return cls(theme, bg == "transparent", view == "compact", link)

    def query(self) -> str:
        """The options that differ from the defaults, as a query string ('' when none)."""
        values = {}
        if self.theme != "auto":
            values["theme"] = self.theme
        if self.transparent:
            values["bg"] = "transparent"
        if self.compact:
            values["view"] = "compact"
        if self.link:
            values["link"] = self.link
        return urlencode(values)


def embed_path(symbols: tuple[str, ...], options: EmbedOptions) -> str:
    query = options.query()
    return "/embed/" + ",".join(symbols) + (f"?{query}" if query else "")


async def embed(request: Request) -> Response:
    """The widget for an iframe: `/embed/BTCUSDT` or `/embed/BTCUSDT,ETHUSDT?theme=dark`."""
    try:
        symbols = directory_of(request).check_list(request.path_params["symbols"])
        options = EmbedOptions.from_query(request.query_params)
    except (SymbolError, EmbedError) as exc:
        return error_page(request, 400, "Bad embed", str(exc))
    hub = hub_of(request)
    items = [{"symbol": s, "html": await hub.fragment(s)} for s in symbols]
    return page(
        request,
        "embed",
        frameable=True,
        items=items,
        symbols=symbols,
        options=options,
        theme=options.theme,
        sse_url=sse_url(symbols),
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
    except (SymbolError, EmbedError) as exc:
        error = str(exc)
        symbols, options = ("BTCUSDT",), EmbedOptions()
    base = public_base(request)
    rows = -(-len(symbols) // CARDS_PER_ROW)
    height = rows * ROW_HEIGHT[options.compact] + 22
    return page(
        request,
        "builder",
        400 if error else 200,
        error=error,
        raw_symbols=echo(raw_symbols, 600),
        options=options,
        symbols=symbols,
        base=base,
        preview_src=embed_path(symbols, options),
        iframe_src=base + embed_path(symbols, options),
        iframe_height=height,
        sse_url=sse_url(symbols, base),
    )
