"""The owner's pages: the alert list (with its forms) and the portfolio, and the alert form that
sits under every card. The JSON API beside them is app.owner; both need the owner."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.errors import InputError
from app.owner import alerts_of, create_alert, owner_only, portfolio_input, store_of, valued
from app.pages import page, renderer_of, settings_of
from app.topics.key import price
from app.urls import sse_url


def _wants_fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def alerts_page(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied if request.method != "GET" else _to_signin(request, denied)
    error = None
    if request.method == "POST":
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if str(v).strip()}
        try:
            alert = await create_alert(request, fields)
        except InputError as exc:
            error = str(exc)
            if _wants_fragment(request):
                return HTMLResponse(
                    renderer_of(request).fragment("alert_answer", alert=None, error=error),
                    status_code=400,
                )
        else:
            if _wants_fragment(request):
                return HTMLResponse(
                    renderer_of(request).fragment("alert_answer", alert=alert, error=None),
                    status_code=201,
                )
            return RedirectResponse("/alerts", status_code=303)
    alerts = await store_of(request).alerts()
    symbols = sorted({a.symbol for a in alerts if a.state == "armed"}) or list(
        settings_of(request).symbols[:1]
    )
    return page(
        request,
        "alerts",
        400 if error else 200,
        alerts=alerts,
        error=error,
        sse_url=sse_url(price(s) for s in symbols),
        status_html=request.state.hub.status_html,
    )


async def delete_alert(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied
    await alerts_of(request).delete(request.path_params["id"])
    return RedirectResponse("/alerts", status_code=303)


async def portfolio_page(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied if request.method != "GET" else _to_signin(request, denied)
    error = None
    if request.method == "POST":
        form = await request.form()
        try:
            holdings = _holdings_from_text(str(form.get("holdings", "")))
            quote, checked = portfolio_input(
                {"quote": str(form.get("quote", "USDT")).strip().upper(), "holdings": holdings}
            )
        except InputError as exc:
            error = str(exc)
        else:
            await store_of(request).set_portfolio(quote, checked)
            return RedirectResponse("/portfolio", status_code=303)
    portfolio = await valued(request)
    text = "\n".join(
        " ".join(x for x in (h["asset"], h["amount"], h["cost"]) if x)
        for h in portfolio["holdings"]
    )
    symbols = [h["symbol"] for h in portfolio["holdings"] if h["symbol"]]
    return page(
        request,
        "portfolio",
        400 if error else 200,
        portfolio=portfolio,
        holdings_text=text,
        error=error,
        table=renderer_of(request).fragment("portfolio", portfolio=portfolio),
        sse_url=sse_url([price(s) for s in symbols] or [price(settings_of(request).symbols[0])])
        + "&portfolio=1",
        status_html=request.state.hub.status_html,
    )


def _holdings_from_text(text: str) -> list[dict[str, str]]:
    """One holding a line: `ASSET AMOUNT [COST]`."""
    holdings = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise InputError(f'line {number}: write ASSET AMOUNT [COST], like "BTC 0.5"')
        item = {"asset": words[0].upper(), "amount": words[1]}
        if len(words) == 3:
            item["cost"] = words[2]
        holdings.append(item)
    return holdings


def _to_signin(request: Request, denied: Response) -> Response:
    """A person at a page: to the sign-in page when there is a token to sign in with."""
    if settings_of(request).owner_token:
        return RedirectResponse("/signin", status_code=303)
    return denied
