"""Page responses: the lifespan objects a request needs, and HTML pages with their headers.

Every page goes out with a Content-Security-Policy that allows no inline or evaluated script
(htmx runs from our own files, app.js handles the little the pages need), `nosniff` and a
referrer policy. Only embed pages may be framed by other sites, and only by the origins in
`frame_ancestors`; every other page may be framed by ourselves alone.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from app.auth import is_owner
from app.config import Settings
from app.hub import Hub
from app.limits import ViewerLimits
from app.render import Renderer
from app.symbols import SymbolDirectory
from app.urls import static_url

_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors {ancestors}"
)


def hub_of(request: Request) -> Hub:
    hub: Hub = request.state.hub
    return hub


def directory_of(request: Request) -> SymbolDirectory:
    directory: SymbolDirectory = request.state.directory
    return directory


def settings_of(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def renderer_of(request: Request) -> Renderer:
    renderer: Renderer = request.state.renderer
    return renderer


def limits_of(request: Request) -> ViewerLimits:
    limits: ViewerLimits = request.state.limits
    return limits


def public_base(request: Request) -> str:
    """Our address as other sites should use it in snippets: the setting, else as requested."""
    configured = settings_of(request).public_url
    return (configured or str(request.base_url)).rstrip("/")


def security_headers(settings: Settings, *, frameable: bool) -> dict[str, str]:
    if frameable:
        ancestors = " ".join(("'self'", *settings.frame_ancestors))
        if "*" in settings.frame_ancestors:
            ancestors = "*"
    else:
        ancestors = "'self'"
    headers = {
        "Content-Security-Policy": _POLICY.format(ancestors=ancestors),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    if not frameable:
        headers["X-Frame-Options"] = "SAMEORIGIN"  # for browsers that predate frame-ancestors
    return headers


def page(
    request: Request,
    name: str,
    status_code: int = 200,
    *,
    frameable: bool = False,
    **context: Any,
) -> HTMLResponse:
    """Render `pages/<name>.html` with what every page needs, and our security headers."""
    settings = settings_of(request)
    context.setdefault("theme", "auto")
    # Embeds are shown on other people's pages: they never show the owner's things.
    context.setdefault("owner", not frameable and is_owner(request, settings.owner_token))
    context.setdefault("token_set", bool(settings.owner_token))
    html = renderer_of(request).page(name, demo=settings.demo, static=static_url, **context)
    return HTMLResponse(
        html, status_code=status_code, headers=security_headers(settings, frameable=frameable)
    )


def echo(text: str | None, limit: int) -> str:
    """User input shown back in a form field: printable characters only, and not too much."""
    return "".join(ch for ch in (text or "") if ch.isprintable())[:limit]


def plain_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error for programs: the sentence as text/plain, never to be sniffed as HTML."""
    return PlainTextResponse(
        message,
        status_code=status,
        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
    )


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error", status, status=status, title=title, message=message)
