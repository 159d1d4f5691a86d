"""The owner's routes: alerts and the portfolio as JSON, and the sign-in page.

Every route here needs the owner (app.auth) and answers 401 with a sentence otherwise. Input is
checked field by field; a bad one gets a 400 that names it. The portfolio is valued live from
the hub's prices, in one quote asset, through the pairs Binance lists (BTC via BTCUSDT); an
asset with no such pair is shown unpriced, never guessed through a third currency.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.alerts import Alerts
from app.auth import COOKIE, Denied, check_owner, check_same_origin, session_value
from app.errors import InputError
from app.pages import directory_of, hub_of, page, plain_error, settings_of
from app.portfolio import value_portfolio
from app.store import Alert, Holding, Store
from app.webhooks import private_address

_DECIMAL = re.compile(r"\d{1,20}(\.\d{1,20})?")
_ASSET = re.compile(r"[A-Z0-9]{1,20}")
MAX_NOTE = 280
MAX_URL = 2000
MAX_HOLDINGS = 200
ALERT_FIELDS = {"symbol", "condition", "price", "webhook", "note"}


def store_of(request: Request) -> Store:
    store: Store = request.state.store
    return store


def alerts_of(request: Request) -> Alerts:
    alerts: Alerts = request.state.alerts
    return alerts


def owner_only(request: Request) -> Response | None:
    """None for the owner; else the 401 (or 403) to answer, with its sentence."""
    try:
        proof = check_owner(request, settings_of(request).owner_token)
        check_same_origin(request, request.method, proof)
    except Denied as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="pricestream"'} if exc.status == 401 else {}
        return plain_error(exc.status, exc.message, headers)
    return None


async def json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InputError('malformed JSON: send an object, like {"symbol": "BTCUSDT"}') from None
    if not isinstance(value, dict):
        raise InputError("the body must be a JSON object")
    return value


def decimal_field(value: Any, name: str) -> str:
    """A positive decimal, given as a string (or an integer): kept as the text it was."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text) or Decimal(text) <= 0:
        raise InputError(f'{name} must be a positive decimal, like "70000" or "0.5"')
    return text


def webhook_field(value: Any, forbid_private: bool) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise InputError(f"webhook must be an http(s) address of at most {MAX_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("webhook must be an http:// or https:// address")
    if forbid_private and private_address(parts.hostname):
        raise InputError("webhook points at an internal address, which this server refuses")
    return value


def note_field(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NOTE or not value.isprintable():
        raise InputError(f"note must be printable text of at most {MAX_NOTE} characters")
    return value


def new_alert(request: Request, data: dict[str, Any]) -> Alert:
    unknown = sorted(set(data) - ALERT_FIELDS)
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: use {', '.join(sorted(ALERT_FIELDS))}")
    symbol = data.get("symbol")
    if not isinstance(symbol, str):
        raise InputError('symbol is missing: name one, like "BTCUSDT"')
    try:
        symbol = directory_of(request).check(symbol)
    except InputError as exc:
        raise InputError(f"symbol: {exc}") from None
    condition = data.get("condition")
    if condition not in ("above", "below"):
        raise InputError('condition must be "above" or "below"')
    settings = settings_of(request)
    return Alert(
        id=uuid.uuid4().hex[:16],
        symbol=symbol,
        condition=condition,
        price=decimal_field(data.get("price"), "price"),
        webhook=webhook_field(data.get("webhook"), settings.webhook_forbid_private),
        note=note_field(data.get("note")),
        state="armed",
        created_at=time.time(),
    )


async def create_alert(request: Request, data: dict[str, Any]) -> Alert:
    alert = new_alert(request, data)
    limit = settings_of(request).max_alerts
    if await store_of(request).count_alerts() >= limit:
        raise InputError(f"too many alerts: at most {limit}; delete some first")
    return await alerts_of(request).create(alert)


# -- the JSON API --------------------------------------------------------------------------


async def alerts_api(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied
    if request.method == "GET":
        return JSONResponse({"alerts": [a.as_json() for a in await store_of(request).alerts()]})
    try:
        alert = await create_alert(request, await json_body(request))
    except InputError as exc:
        return plain_error(400, str(exc))
    return JSONResponse(alert.as_json(), status_code=201)


async def alert_api(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied
    alert_id = request.path_params["id"]
    if request.method == "DELETE":
        if await alerts_of(request).delete(alert_id):
            return Response(status_code=204)
    else:
        alert = await store_of(request).alert(alert_id)
        if alert is not None:
            return JSONResponse(alert.as_json())
    return plain_error(404, f"no alert {alert_id[:40]!r}")


async def portfolio_api(request: Request) -> Response:
    if (denied := owner_only(request)) is not None:
        return denied
    store = store_of(request)
    if request.method == "PUT":
        try:
            quote, holdings = portfolio_input(await json_body(request))
        except InputError as exc:
            return plain_error(400, str(exc))
        await store.set_portfolio(quote, holdings)
    return JSONResponse(await valued(request))


def portfolio_input(data: dict[str, Any]) -> tuple[str, list[Holding]]:
    unknown = sorted(set(data) - {"quote", "holdings"})
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r}: use quote, holdings")
    quote = data.get("quote", "USDT")
    if not isinstance(quote, str) or not _ASSET.fullmatch(quote):
        raise InputError('quote must be an asset like "USDT"')
    items = data.get("holdings")
    if not isinstance(items, list) or len(items) > MAX_HOLDINGS:
        raise InputError(f"holdings must be a list of at most {MAX_HOLDINGS} entries")
    holdings: dict[str, Holding] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"asset", "amount", "cost"}:
            raise InputError(f'holdings[{i}] must be {{"asset", "amount", "cost"?}}')
        asset = item.get("asset")
        if not isinstance(asset, str) or not _ASSET.fullmatch(asset):
            raise InputError(f'holdings[{i}].asset must be an asset like "BTC"')
        amount = decimal_field(item.get("amount"), f"holdings[{i}].amount")
        cost = item.get("cost")
        holdings[asset] = Holding(
            asset, amount, None if cost is None else decimal_field(cost, f"holdings[{i}].cost")
        )
    return quote, list(holdings.values())


async def valued(request: Request) -> dict[str, Any]:
    """The holdings with each asset's live price and value in the quote asset, and the total."""
    return await value_portfolio(store_of(request), directory_of(request), hub_of(request))


# -- signing in ----------------------------------------------------------------------------


async def signin(request: Request) -> Response:
    settings = settings_of(request)
    if not settings.owner_token:
        return page(request, "signin", 200, error=None, no_token=True)
    if request.method == "GET":
        return page(request, "signin", 200, error=None, no_token=False)
    form = await request.form()
    given = str(form.get("token", ""))
    try:
        check_same_origin(request, "POST", "cookie")
    except Denied as exc:
        return plain_error(exc.status, exc.message)
    if not hmac.compare_digest(given.encode(), settings.owner_token.encode()):
        return page(request, "signin", 401, error="That is not the owner token.", no_token=False)
    response = RedirectResponse("/alerts", status_code=303)
    response.set_cookie(
        COOKIE,
        session_value(settings.owner_token),
        max_age=30 * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def signout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response
