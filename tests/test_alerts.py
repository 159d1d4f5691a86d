"""Alerts end to end: real databases (a SQLite file and a real PostgreSQL, each test that takes
`database` on both), the real simulator, a real webhook target, real auth."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from app.alerts import AlertBook
from app.demo import DemoExchange
from app.store import Alert, StoreError, open_store
from app.store.schema import SCHEMA_VERSION
from app.store.sqlite import FILENAME
from tests.conftest import (
    WAIT,
    eventually,
    open_sse,
    run_server,
    settings_for,
)
from tests.databases import Database
from tests.system import free_port
from tests.webhook_target import webhook_target

pytestmark = pytest.mark.anyio


def _alert(i: int, condition: str, price: str, symbol: str = "BTCUSDT") -> Alert:
    return Alert(f"a{i:07d}", symbol, condition, price, None, None, "armed", 0.0)


def test_the_book_touches_only_what_a_price_crossed() -> None:
    book = AlertBook()
    for i, (condition, price) in enumerate(
        [("above", "100"), ("above", "105"), ("above", "100"), ("below", "90"), ("below", "95")]
    ):
        book.add(_alert(i, condition, price))
    assert book.crossed("BTCUSDT", Decimal("99.99")) == []
    assert sorted(book.crossed("BTCUSDT", Decimal("100"))) == ["a0000000", "a0000002"]
    assert book.crossed("BTCUSDT", Decimal("100")) == []  # taken out: never twice
    assert book.crossed("ETHUSDT", Decimal("1000")) == []
    assert sorted(book.crossed("BTCUSDT", Decimal("90"))) == ["a0000003", "a0000004"]
    book.remove("a0000001")
    assert book.crossed("BTCUSDT", Decimal("1000")) == [] and len(book) == 0
    assert book.symbols() == set()


def test_a_million_armed_alerts_cost_a_trade_what_one_does() -> None:
    book = AlertBook()
    for i in range(1_000_000):
        book.add(_alert(i, "above", str(100_000 + i)))
    started = time.perf_counter()
    for price in range(1000):
        assert book.crossed("BTCUSDT", Decimal(50_000 + price)) == []
    per_trade = (time.perf_counter() - started) / 1000
    # A check per alert would take tens of ms; a bisect takes microseconds (bench/ measures it).
    assert per_trade < 0.001, per_trade
    assert len(book.crossed("BTCUSDT", Decimal("100002"))) == 3


def store_errors(folder: Path) -> str:
    with pytest.raises(StoreError) as caught:
        open_store(str(folder))
    return str(caught.value)


def test_the_store_refuses_what_it_cannot_use_and_touches_nothing(tmp_path: Path) -> None:
    newer = tmp_path / "newer"
    newer.mkdir()
    conn = sqlite3.connect(newer / FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = (newer / FILENAME).read_bytes()
    assert "written by a newer pricestream" in store_errors(newer)
    assert (newer / FILENAME).read_bytes() == before
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / FILENAME).write_bytes(b"this is not a database" * 100)
    assert "is not a SQLite database" in store_errors(corrupt)
    assert (corrupt / FILENAME).read_bytes() == b"this is not a database" * 100
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        # Root writes through permission bits; /proc/1 is a folder nobody can add files to.
        folder = Path("/proc/1") if os.geteuid() == 0 else readonly
        assert "is read-only" in store_errors(folder)
    finally:
        readonly.chmod(0o700)


def test_a_read_only_data_dir_stops_start_up_with_a_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "app", "--data-dir", str(blocker / "data"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("pricestream: cannot create the data folder")
    assert "Traceback" not in done.stderr


async def test_create_list_get_delete_and_bad_input(
    exchange: DemoExchange, database: Database
) -> None:
    async with (
        run_server(settings_for(exchange, **database.settings)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        await _create_list_get_delete_and_bad_input(http)


async def _create_list_get_delete_and_bad_input(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/api/v1/alerts",
        json={"symbol": "btcusdt", "condition": "above", "price": "70000", "note": "moon"},
    )
    assert created.status_code == 201
    alert = created.json()
    assert {k: alert[k] for k in ("symbol", "condition", "price", "state", "note")} == {
        "symbol": "BTCUSDT",
        "condition": "above",
        "price": "70000",
        "state": "armed",
        "note": "moon",
    }
    assert alert["fired_at"] is None and alert["fired_price"] is None
    assert alert["created_at"].endswith("Z")
    listed = (await http.get("/api/v1/alerts")).json()["alerts"]
    assert [a["id"] for a in listed] == [alert["id"]]
    assert (await http.get(f"/api/v1/alerts/{alert['id']}")).json() == alert
    assert (await http.delete(f"/api/v1/alerts/{alert['id']}")).status_code == 204
    assert (await http.get(f"/api/v1/alerts/{alert['id']}")).status_code == 404
    for body, sentence in (
        ("{nope", "malformed JSON"),
        ("[1]", "the body must be a JSON object"),
        ('{"symbol": "NOPE", "condition": "above", "price": "1"}', "symbol: unknown symbol"),
        ('{"condition": "above", "price": "1"}', "symbol is missing"),
        ('{"symbol": "BTCUSDT", "condition": "sideways", "price": "1"}', "condition must be"),
        ('{"symbol": "BTCUSDT", "condition": "above", "price": "-5"}', "price must be a positive"),
        (
            '{"symbol": "BTCUSDT", "condition": "above", "price": "lots"}',
            "price must be a positive",
        ),
        ('{"symbol": "BTCUSDT", "condition": "above", "price": 1.5e3}', "price must be a positive"),
        (
            '{"symbol": "BTCUSDT", "condition": "above", "price": "1", "note": "'
            + "x" * 300
            + '"}',
            "note must be printable text of at most 280",
        ),
        (
            '{"symbol": "BTCUSDT", "condition": "above", "price": "1", "webhook": "ftp://x"}',
            "webhook must be an http:// or https:// address",
        ),
        ('{"symbol": "BTCUSDT", "condition": "above", "price": "1", "color": 1}', "unknown field"),
    ):
        answer = await http.post(
            "/api/v1/alerts", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400, body
        assert answer.text.startswith(sentence), answer.text


async def test_too_many_alerts(exchange: DemoExchange, database: Database) -> None:
    async with (
        run_server(settings_for(exchange, max_alerts=2, **database.settings)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        body = {"symbol": "BTCUSDT", "condition": "below", "price": "1"}
        for _ in range(2):
            assert (await http.post("/api/v1/alerts", json=body)).status_code == 201
        refused = await http.post("/api/v1/alerts", json=body)
        assert refused.status_code == 400
        assert refused.text == "too many alerts: at most 2; delete some first"


async def test_fires_once_on_the_first_trade_past_it_tells_the_page_and_delivers(
    exchange: DemoExchange, database: Database
) -> None:
    settings = settings_for(exchange, webhook_timeout=0.5, **database.settings)
    async with (
        webhook_target(["fail", "hang", "ok"]) as target,
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        alert = (
            await http.post(
                "/api/v1/alerts",
                json={
                    "symbol": "ETHUSDT",
                    "condition": "above",
                    "price": "3500",
                    "webhook": target.url,
                },
            )
        ).json()
        # No viewer at all: the alerted symbol is subscribed anyway.
        await eventually(lambda: "ethusdt@trade" in exchange.subscriptions())
        async with open_sse(http, "/sse?symbols=BTCUSDT") as page:  # the owner's page
            exchange.trade("ETHUSDT", price="3499.99")
            exchange.trade("ETHUSDT", price="3500.01")
            exchange.trade("ETHUSDT", price="3600.00")  # past it again: not a second firing
            event = await page.until(lambda e: e.event == "alert")
            assert 'data-fired-price="3500.01000000"' in event.data
        fired = (await http.get(f"/api/v1/alerts/{alert['id']}")).json()
        assert (fired["state"], fired["fired_price"]) == ("fired", "3500.01000000")
        # 500, then no answer (0.5 s timeout), then 204: three attempts, one key.
        await eventually(lambda: len(target.received) == 3, WAIT * 2)
        keys = {r.headers["idempotency-key"] for r in target.received}
        assert len(keys) == 1
        assert all(r.body["delivery_id"] in keys for r in target.received)
        assert target.received[-1].body["alert"]["fired_price"] == "3500.01000000"
        # What the database itself says (its own connection, as another process would see it).
        await eventually(lambda: database.value("SELECT state FROM deliveries") == "delivered")
        await asyncio.sleep(0.5)
        assert len(target.received) == 3  # a 2xx ends it
        assert (await http.get(f"/api/v1/alerts/{alert['id']}")).json()["delivery"] == ("delivered")


async def test_the_owner_token_guards_every_private_route(exchange: DemoExchange) -> None:
    settings = settings_for(exchange, owner_token="s3cret-token")
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        for method, path in (
            ("GET", "/api/v1/alerts"),
            ("POST", "/api/v1/alerts"),
            ("GET", "/api/v1/alerts/x"),
            ("DELETE", "/api/v1/alerts/x"),
            ("GET", "/api/v1/portfolio"),
            ("PUT", "/api/v1/portfolio"),
        ):
            answer = await http.request(method, path, json={})
            assert answer.status_code == 401, (method, path)
            assert answer.text.startswith("this needs the owner")
        wrong = await http.get("/api/v1/alerts", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.text) == (401, "wrong owner token")
        bearer = {"Authorization": "Bearer s3cret-token"}
        assert (await http.get("/api/v1/alerts", headers=bearer)).status_code == 200
        # Price pages never need it.
        assert (await http.get("/api/v1/quotes?symbols=BTCUSDT")).status_code == 200
        # Pages sign in once: an HttpOnly, SameSite=Strict cookie that is not the token.
        bad = await http.post("/signin", data={"token": "guess"})
        assert bad.status_code == 401
        signed = await http.post("/signin", data={"token": "s3cret-token"})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert (await http.get("/api/v1/alerts")).status_code == 200  # the cookie works
        # A write riding on the cookie from another site's page is refused (CSRF).
        forged = await http.post(
            "/api/v1/alerts",
            json={"symbol": "BTCUSDT", "condition": "above", "price": "1"},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        own = await http.post(
            "/api/v1/alerts",
            json={"symbol": "BTCUSDT", "condition": "above", "price": "1"},
            headers={"Origin": server.url},
        )
        assert own.status_code == 201


async def test_without_a_token_only_loopback_clients_are_the_owner(
    exchange: DemoExchange,
) -> None:
    # As behind a reverse proxy on this machine: uvicorn believes X-Forwarded-For from it.
    settings = settings_for(exchange, forwarded_allow_ips="127.0.0.1")
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        assert (await http.get("/api/v1/alerts")).status_code == 200
        remote = await http.get("/api/v1/alerts", headers={"X-Forwarded-For": "203.0.113.9"})
        assert remote.status_code == 401
        assert "start it with --owner-token (PRICESTREAM_OWNER_TOKEN)" in remote.text
        local = await http.get("/api/v1/alerts", headers={"X-Forwarded-For": "127.0.0.1"})
        assert local.status_code == 200
    # A proxy we do not trust cannot claim to be loopback for someone else.
    untrusted = settings_for(exchange, forwarded_allow_ips="192.0.2.1")
    async with (
        run_server(untrusted) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        spoofed = await http.get("/api/v1/alerts", headers={"X-Forwarded-For": "127.0.0.1"})
        assert spoofed.status_code == 200  # we are on loopback ourselves; the header is ignored
        claim = await http.get("/api/v1/alerts", headers={"X-Forwarded-For": "203.0.113.9"})
        assert claim.status_code == 200  # ignored too: only trusted proxies are believed


async def test_an_alert_crossed_while_the_upstream_was_down_fires_on_the_first_live_trade(
    exchange: DemoExchange, database: Database
) -> None:
    settings = settings_for(exchange, backoff_initial=0.2, backoff_max=0.4, **database.settings)
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        alert = (
            await http.post(
                "/api/v1/alerts", json={"symbol": "SOLUSDT", "condition": "below", "price": "150"}
            )
        ).json()
        await eventually(lambda: "solusdt@trade" in exchange.subscriptions())
        exchange.refuse_next(3, 503)
        exchange.reset_connections()
        await eventually(lambda: not exchange.peers)
        exchange.market.instruments["SOLUSDT"].price = Decimal("140")  # fell while we were away
        await eventually(lambda: "solusdt@trade" in exchange.subscriptions())
        trade = exchange.trade("SOLUSDT", price="141.50")
        await eventually(
            lambda: database.value("SELECT state FROM alerts WHERE id = ?", alert["id"]) == "fired"
        )
        fired = (await http.get(f"/api/v1/alerts/{alert['id']}")).json()
        assert fired["fired_price"] == trade["p"] == "141.50000000"


async def start_process(
    database: Database, port: int, upstream: DemoExchange, **env_overrides: str
) -> asyncio.subprocess.Process:
    """`python -m app` on `port` with `database`, in a process of its own (to kill -9)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICESTREAM_")}
    env.update(
        database.env,
        PRICESTREAM_PORT=str(port),
        PRICESTREAM_UPSTREAM=upstream.ws_url,
        PRICESTREAM_REST=upstream.rest_url,
        PRICESTREAM_LOG_LEVEL="warning",
        PRICESTREAM_WEBHOOK_TIMEOUT="1",
    )
    env.update(env_overrides)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", env=env)
    async with httpx.AsyncClient(timeout=1) as http:
        async with asyncio.timeout(WAIT * 2):
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code < 600:
                        return proc
                except httpx.TransportError:
                    await asyncio.sleep(0.1)


async def test_kill_9_between_firing_and_delivery_loses_nothing_and_fires_nothing_twice(
    exchange: DemoExchange, database: Database
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with webhook_target(["fail"]) as failing:
        proc = await start_process(database, port, exchange)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
                ids = []
                for price in ("100", "101", "102"):
                    answer = await http.post(
                        "/api/v1/alerts",
                        json={
                            "symbol": "BNBUSDT",
                            "condition": "above",
                            "price": price,
                            "webhook": failing.url,
                        },
                    )
                    ids.append(answer.json()["id"])
                await eventually(lambda: "bnbusdt@trade" in exchange.subscriptions())
                exchange.trade("BNBUSDT", price="101.5")  # fires two of the three
                await eventually(
                    lambda: len({r.body["delivery_id"] for r in failing.received}) == 2
                )
            first_keys = {r.headers["idempotency-key"] for r in failing.received}
        finally:
            proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(WAIT):
                await proc.wait()
    # Restarted with the target now answering: exactly the two pending ones, with their keys.
    async with webhook_target(["ok"], port=int(failing.url.split(":")[2].split("/")[0])) as target:
        proc = await start_process(database, port, exchange)
        try:
            await eventually(lambda: len(target.received) == 2, WAIT * 2)
            assert {r.headers["idempotency-key"] for r in target.received} == first_keys
            async with httpx.AsyncClient(base_url=base, timeout=WAIT) as http:
                states = {
                    a["id"]: (a["state"], a["fired_price"], a["delivery"])
                    for a in (await http.get("/api/v1/alerts")).json()["alerts"]
                }
                await eventually(lambda: "bnbusdt@trade" in exchange.subscriptions())
                exchange.trade("BNBUSDT", price="150")  # now the third fires, and only it
                await eventually(lambda: len(target.received) == 3, WAIT * 2)
                await asyncio.sleep(0.3)
                assert len(target.received) == 3
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT):
                await proc.wait()
    assert states[ids[0]][:2] == ("fired", "101.50000000")
    assert states[ids[1]][:2] == ("fired", "101.50000000")
    assert states[ids[2]] == ("armed", None, None)


async def test_public_pages_and_embeds_never_show_the_owners_things(exchange: DemoExchange) -> None:
    settings = settings_for(exchange, owner_token="tok")
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        public = (await http.get("/")).text
        assert "alert-form" not in public and 'sse-swap="alert"' not in public
        assert 'href="/signin"' in public
        await http.post("/signin", data={"token": "tok"})
        owned = (await http.get("/")).text
        assert "alert-form" in owned and 'sse-swap="alert"' in owned
        # Embeds live on other people's pages: never the owner's things, signed in or not.
        embed = (await http.get("/embed/BTCUSDT")).text
        assert "alert-form" not in embed and "/alerts" not in embed
        assert (await http.get("/alerts")).status_code == 200
        http.cookies.clear()
        assert (await http.get("/alerts", follow_redirects=False)).headers["location"] == "/signin"
