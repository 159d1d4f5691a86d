"""JSON twins of the pages, for programs: the same topics as the fragments, as data.

`GET /api/v1/quotes?symbols=A,B` answers the price of each, and `GET /api/v1/topics/<TOPIC>` any
one topic (`book:BTCUSDT`, `chart:BTCUSDT:1m`), in the shapes the WebSocket API sends (without
its `type` for quotes). Decimals stay the strings Binance sent; what has not come yet is null.
Like `/fragment`, a topic nobody watched is given a few seconds to get its first data.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.errors import InputError
from app.pages import directory_of, hub_of, plain_error, settings_of
from app.topics.key import parse_request, parse_topic

# How long a request waits for first data of a topic nobody was watching.
FIRST_DATA_WAIT = 3.0


async def quotes(request: Request) -> Response:
    """`{"quotes": [...]}`: the price of every symbol asked for, in the order asked."""
    try:
        topics = parse_request(
            None,
            request.query_params.get("symbols", ""),
            directory_of(request),
            settings_of(request).max_symbols,
        )
    except InputError as exc:
        return plain_error(400, str(exc))
    hub = hub_of(request)
    found = await asyncio.gather(*(hub.message(t, wait=FIRST_DATA_WAIT) for t in topics))
    return JSONResponse({"quotes": [{k: v for k, v in q.items() if k != "type"} for q in found]})


async def topic(request: Request) -> Response:
    """One topic's current value, e.g. `/api/v1/topics/book:BTCUSDT`."""
    try:
        wanted = parse_topic(request.path_params["topic"], directory_of(request))
    except InputError as exc:
        return plain_error(400, str(exc))
    return JSONResponse(await hub_of(request).message(wanted, wait=FIRST_DATA_WAIT))
