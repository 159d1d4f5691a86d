"""The demo exchange speaks Binance's wire protocol (shared/binance-streams.md sections 2-4)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.demo import DemoExchange
from tests.conftest import MS, WAIT

pytestmark = pytest.mark.anyio


async def recv(ws: ClientConnection) -> Any:
    async with asyncio.timeout(WAIT):
        return json.loads(await ws.recv())


async def test_control_messages_and_replies(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        await ws.send(
            json.dumps(
                {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@ticker"], "id": 1}
            )
        )
        assert await recv(ws) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await recv(ws) == {"result": ["btcusdt@ticker", "btcusdt@trade"], "id": 2}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@ticker"], "id": 3}))
        assert await recv(ws) == {"result": None, "id": 3}
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 4}))
        assert await recv(ws) == {"result": True, "id": 4}
        await asyncio.sleep(1100 * MS)  # stay under 5 messages a second
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 5}))
        assert await recv(ws) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 5,
        }
        await ws.send(json.dumps({"method": "FROB", "id": 6}))
        reply = await recv(ws)
        assert reply["id"] == 6 and reply["error"]["code"] == 2
        await ws.send("{not json")
        assert (await recv(ws))["error"]["code"] == 3
        # A well-formed name for a symbol that does not exist is accepted, and stays silent.
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["foousdt@trade"], "id": 7}))
        assert await recv(ws) == {"result": None, "id": 7}


async def test_combined_and_raw_payloads(exchange: DemoExchange) -> None:
    async with (
        connect(exchange.ws_url + "/stream?streams=btcusdt@trade") as combined,
        connect(exchange.ws_url + "/ws/btcusdt@trade?timeUnit=MICROSECOND") as raw,
    ):
        async with asyncio.timeout(WAIT):
            while len(exchange.peers) < 2:
                await asyncio.sleep(5 * MS)
        payload = exchange.trade("BTCUSDT")
        wrapped = await recv(combined)
        assert wrapped == {"stream": "btcusdt@trade", "data": payload}
        assert set(payload) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
        unwrapped = await recv(raw)
        assert unwrapped["E"] == payload["E"] * 1000 and unwrapped["p"] == payload["p"]


async def test_all_simulated_payloads_have_every_field() -> None:
    async with DemoExchange(trades_per_second=20, ticker_interval=0.2, seed=1) as ex:
        names = [
            "ethusdt@trade",
            "ethusdt@aggTrade",
            "ethusdt@ticker",
            "ethusdt@miniTicker",
            "ethusdt@bookTicker",
        ]
        async with connect(ex.ws_url + "/stream?streams=" + "/".join(names)) as ws:
            seen: dict[str, set[str]] = {}
            async with asyncio.timeout(WAIT):
                while len(seen) < len(names):
                    msg = await recv(ws)
                    seen[msg["stream"]] = set(msg["data"])
    assert seen["ethusdt@aggTrade"] == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
    assert seen["ethusdt@ticker"] == set("eEspPwxcQbBaAohlvqOCFLn")
    assert seen["ethusdt@miniTicker"] == set("eEscohlvq")
    assert seen["ethusdt@bookTicker"] == set("usbBaA")


async def test_rate_limit_closes_with_1008(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "Too many requests")


async def test_stream_cap_answers_code_4(exchange: DemoExchange) -> None:
    async with connect(exchange.ws_url + "/stream") as ws:
        names = [f"s{i}usdt@trade" for i in range(1025)]
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
        assert await recv(ws) == {"error": {"code": 4, "msg": "Too many subscriptions"}, "id": 1}


async def test_refusals_and_shutdown_notice(exchange: DemoExchange) -> None:
    exchange.refuse_next(
        1, 451, '{"code":0,"msg":"Service unavailable from a restricted location"}'
    )
    with pytest.raises(InvalidStatus) as info:
        await connect(exchange.ws_url + "/stream")
    assert info.value.response.status_code == 451
    async with connect(exchange.ws_url + "/stream") as ws:
        async with asyncio.timeout(WAIT):
            while not exchange.peers:
                await asyncio.sleep(5 * MS)
        exchange.server_shutdown()
        msg = await recv(ws)
        assert msg["stream"] == "!serverShutdown" and msg["data"]["e"] == "serverShutdown"


async def test_rest_exchange_info(exchange: DemoExchange) -> None:
    async with httpx.AsyncClient(base_url=exchange.rest_url, timeout=WAIT) as client:
        info = (await client.get("/api/v3/exchangeInfo")).json()
        missing = await client.get("/api/v3/nothing")
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["status"] == "TRADING" and btc["quoteAsset"] == "USDT"
    assert {
        "filterType": "PRICE_FILTER",
        "minPrice": "0.01000000",
        "maxPrice": "1000000.00000000",
        "tickSize": "0.01000000",
    } in btc["filters"]
    assert missing.status_code == 404
