"""Several servers on one database, and a database that goes away: real PostgreSQL (and the
same tests on a shared SQLite file where they apply), real servers, a real webhook target.

Exactly once here means: of all the servers hearing the same trade, one conditional UPDATE in
the database decides which one fires an alert, and a delivery is attempted only under a claim
that one server holds at a time.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import ServerSentEvent

from app.demo import DemoExchange
from app.store import Alert, Delivery, open_store
from app.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import (
    WAIT,
    EventReader,
    data_dir,
    eventually,
    open_sse,
    parse_html,
    run_server,
    settings_for,
)
from tests.databases import Database, PostgresServer
from tests.system import free_port
from tests.test_alerts import start_process
from tests.webhook_target import webhook_target

pytestmark = pytest.mark.anyio


def _alert(alert_id: str, webhook: str | None = None) -> Alert:
    return Alert(alert_id, "BTCUSDT", "above", "100", webhook, None, "armed", 1.0)


def _delivery(delivery_id: str, alert_id: str) -> Delivery:
    return Delivery(delivery_id, alert_id, "http://127.0.0.1:9/hook", "pending", 0, 2.0, 2.0)


async def test_two_stores_fire_an_alert_once_and_claim_a_delivery_once(database: Database) -> None:
    one = open_store(database.data_dir, database.url)
    two = open_store(database.data_dir, database.url)
    try:
        await one.add_alert(_alert("x1", "http://127.0.0.1:9/hook"))
        assert await two.changes() == await one.changes() == 1
        # Four attempts at once, from two connections: the database lets exactly one win.
        won = await asyncio.gather(
            *(
                s.fire("x1", 2.0, "100.5", _delivery(f"d{i}", "x1"))
                for i, s in enumerate([one, two] * 2)
            )
        )
        assert sorted(won) == [False, False, False, True]
        [delivery] = await two.deliveries()
        assert await one.changes() == 2 and await two.armed() == []
        # Two claims at once: one gets it, until its claim lapses at 15.
        got = await asyncio.gather(
            one.claim_deliveries("one", 10.0, 15.0, 10), two.claim_deliveries("two", 10.0, 15.0, 10)
        )
        assert sorted(len(g) for g in got) == [0, 1]
        holder, other = (("one", one), ("two", two)) if got[0] else (("two", two), ("one", one))
        assert (await other[1].claim_deliveries(other[0], 14.9, 20.0, 10)) == []
        assert await other[1].next_delivery_at() == 15.0
        # Lapsed: the other server takes it over, and the first one's late outcome is ignored.
        [(taken, alert)] = await other[1].claim_deliveries(other[0], 15.1, 20.0, 10)
        assert (taken.id, alert.id, alert.state) == (delivery.id, "x1", "fired")
        await holder[1].retry_later(delivery.id, holder[0], 99.0, "late")
        await holder[1].give_up(delivery.id, holder[0], "late")
        assert database.rows("SELECT state, attempts, claimed_by FROM deliveries") == [
            ("pending", 0, other[0])
        ]
        await other[1].delivered(delivery.id, 16.0)
        assert database.rows("SELECT state, attempts, claimed_by FROM deliveries") == [
            ("delivered", 1, None)
        ]
        assert await one.claim_deliveries("one", 100.0, 105.0, 10) == []
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_database_of_the_first_schema_is_migrated_with_what_it_holds(
    database: Database,
) -> None:
    # As the first pricestream with alerts left it: schema 1, an alert fired, its delivery due.
    for statement in MIGRATIONS[0]:
        database.rows(statement)
    if database.url:
        database.rows("CREATE TABLE pricestream_schema (version INTEGER NOT NULL)")
        database.rows("INSERT INTO pricestream_schema (version) VALUES (1)")
    else:
        database.rows("PRAGMA user_version = 1")
    database.rows(
        "INSERT INTO alerts VALUES ('old', 'BTCUSDT', 'above', '5', 'http://h/', NULL, 'fired', "
        "1.0, 2.0, '6')"
    )
    database.rows(
        "INSERT INTO deliveries (id, alert_id, url, state, attempts, created_at, next_attempt_at) "
        "VALUES ('d1', 'old', 'http://h/', 'pending', 3, 2.0, 3.0)"
    )
    store = open_store(database.data_dir, database.url)
    try:
        [(delivery, alert)] = await store.claim_deliveries("me", 10.0, 20.0, 5)
        assert (delivery.id, delivery.attempts, alert.fired_price) == ("d1", 3, "6")
        assert await store.changes() == 0
    finally:
        await store.aclose()
    version = (
        database.value("SELECT version FROM pricestream_schema")
        if database.url
        else database.value("PRAGMA user_version")
    )
    assert version == SCHEMA_VERSION == 2


def test_a_newer_schema_or_no_database_stops_start_up_with_a_sentence(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    database = Database(data_dir(), url)
    open_store("", url).close()
    database.rows("UPDATE pricestream_schema SET version = ?", SCHEMA_VERSION + 1)
    tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    before = sorted(database.rows(tables))
    name = f"'{url.rsplit('/', 1)[1]}' on 127.0.0.1:{postgres.port}"
    for given, sentence in (
        (
            url,
            f"pricestream: the database {name} was written by a newer pricestream (schema "
            f"{SCHEMA_VERSION + 1}; this one knows up to {SCHEMA_VERSION}); it was left untouched",
        ),
        (
            f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
            "pricestream: cannot reach the database 'nothing' on 127.0.0.1:",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "app", "--database", given, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(sentence), done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(database.rows(tables)) == before
    assert database.value("SELECT version FROM pricestream_schema") == SCHEMA_VERSION + 1


async def _alert_events(page: EventReader, count: int) -> set[str]:
    """The ids of the next `count` distinct alerts announced on an owner's page."""
    seen: set[str] = set()

    def announced(event: ServerSentEvent) -> bool:
        if event.event == "alert":
            seen.add(str(parse_html(event.data)[0].attrs["data-alert-id"]))
        return len(seen) == count

    await page.until(announced)
    return seen


def _both_hear(exchange: DemoExchange, stream: str) -> bool:
    return sum(stream in peer.streams for peer in exchange.peers) == 2


async def test_two_servers_on_one_database_fire_each_alert_once_and_deliver_it_once(
    exchange: DemoExchange, database: Database
) -> None:
    settings = settings_for(exchange, database_poll=0.1, webhook_timeout=2.0, **database.settings)
    async with (
        webhook_target(["ok"]) as target,
        run_server(settings) as one,
        run_server(settings) as two,
        httpx.AsyncClient(base_url=one.url, timeout=WAIT) as http_one,
        httpx.AsyncClient(base_url=two.url, timeout=WAIT) as http_two,
    ):
        ids = []
        for i in range(11):  # made on either server
            answer = await (http_one, http_two)[i % 2].post(
                "/api/v1/alerts",
                json={
                    "symbol": "ETHUSDT",
                    "condition": "above",
                    "price": str(3000 + i),
                    "webhook": target.url,
                },
            )
            assert answer.status_code == 201
            ids.append(answer.json()["id"])
        books = (one.app.state.alerts, two.app.state.alerts)
        # Each server learns of the other's alerts, and of a deletion made on the other.
        await eventually(lambda: all(set(book.armed) == set(ids) for book in books))
        assert (await http_two.delete(f"/api/v1/alerts/{ids[-1]}")).status_code == 204
        deleted = ids.pop()
        await eventually(lambda: deleted not in books[0].armed)
        await eventually(lambda: _both_hear(exchange, "ethusdt@trade"))
        async with (
            open_sse(http_one, "/sse?symbols=BTCUSDT") as page_one,
            open_sse(http_two, "/sse?symbols=BTCUSDT") as page_two,
        ):
            # Both servers hear this trade and both try to fire all ten.
            exchange.trade("ETHUSDT", price="3100")
            exchange.trade("ETHUSDT", price="3200")  # past them again: no second firing
            # Both servers' owner pages are told of every firing, whichever server won it.
            assert await _alert_events(page_one, 10) == set(ids)
            assert await _alert_events(page_two, 10) == set(ids)
        await eventually(lambda: len(target.received) == 10)
        assert books[0].fired_count + books[1].fired_count == 10
        await eventually(
            lambda: (
                database.value("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'") == 10
            )
        )
        # Time for a second delivery, had anything been delivered twice: a claim (5 s) lapsing
        # is the longest path, and each server looks at the database ten times a second.
        await asyncio.sleep(1.0)
        assert len(target.received) == 10
        keys = [r.headers["idempotency-key"] for r in target.received]
        assert sorted(keys) == sorted({r.body["delivery_id"] for r in target.received})
        assert {r.body["alert"]["id"] for r in target.received} == set(ids)
        assert (
            sorted(database.rows("SELECT state, fired_price FROM alerts"))
            == [("fired", "3100.00000000")] * 10
        )
        assert database.rows("SELECT DISTINCT attempts FROM deliveries") == [(1,)]


async def test_a_server_killed_mid_delivery_leaves_it_to_another_once_its_claim_lapses(
    exchange: DemoExchange, database: Database
) -> None:
    port = free_port()
    async with webhook_target(["hang", "ok"]) as target:
        # Attempts cut at 2 s: a claim lasts 2 * 2 + 1 = 5 s.
        proc = await start_process(database, port, exchange, PRICESTREAM_WEBHOOK_TIMEOUT="2")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
                answer = await http.post(
                    "/api/v1/alerts",
                    json={
                        "symbol": "XRPUSDT",
                        "condition": "below",
                        "price": "0.5",
                        "webhook": target.url,
                    },
                )
                assert answer.status_code == 201
            await eventually(lambda: "xrpusdt@trade" in exchange.subscriptions())
            exchange.trade("XRPUSDT", price="0.4")
            await eventually(lambda: len(target.received) == 1)  # and the target hangs
        finally:
            proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(WAIT):
                await proc.wait()
        [(claimed_by, claimed_until)] = database.rows(
            "SELECT claimed_by, claimed_until FROM deliveries"
        )
        assert claimed_by is not None and str(proc.pid) in claimed_by
        # Another server on the same database takes the delivery over once the claim lapses,
        # with the same key; the target answers 2xx this time.
        settings = settings_for(exchange, database_poll=0.1, **database.settings)
        async with run_server(settings):
            await eventually(lambda: len(target.received) == 2, WAIT)
            await eventually(lambda: database.value("SELECT state FROM deliveries") == "delivered")
        first, second = target.received
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        [(attempts, delivered_at, holder)] = database.rows(
            "SELECT attempts, delivered_at, claimed_by FROM deliveries"
        )
        assert delivered_at >= claimed_until  # not a moment before the lease passed
        assert (attempts, holder) == (1, None)  # the killed server's attempt left no record


async def _answers(http: httpx.AsyncClient, alert_id: str) -> AsyncIterator[httpx.Response]:
    """One answer from every alert and portfolio route, JSON and pages."""
    html = {"Accept": "text/html"}
    yield await http.get("/api/v1/alerts")
    yield await http.post(
        "/api/v1/alerts", json={"symbol": "BTCUSDT", "condition": "above", "price": "1"}
    )
    yield await http.get(f"/api/v1/alerts/{alert_id}")
    yield await http.delete(f"/api/v1/alerts/{alert_id}")
    yield await http.get("/api/v1/portfolio")
    yield await http.put(
        "/api/v1/portfolio", json={"quote": "USDT", "holdings": [{"asset": "BTC", "amount": "1"}]}
    )
    yield await http.get("/alerts", headers=html)
    yield await http.get("/portfolio", headers=html)


async def test_a_database_that_goes_away_answers_503_while_prices_flow_then_comes_back(
    exchange: DemoExchange,
) -> None:
    postgres = PostgresServer()  # our own, to stop and start
    try:
        await asyncio.to_thread(postgres.start)
        database = Database(data_dir(), postgres.create_database())
        settings = settings_for(exchange, database_poll=0.1, **database.settings)
        async with (
            run_server(settings) as server,
            httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
            open_sse(http, "/sse?symbols=BTCUSDT,SOLUSDT") as page,
        ):
            created = await http.post(
                "/api/v1/alerts", json={"symbol": "SOLUSDT", "condition": "below", "price": "150"}
            )
            alert_id = created.json()["id"]
            await eventually(lambda: "solusdt@trade" in exchange.subscriptions())

            status = (await http.get("/healthz")).json()["status"]
            await asyncio.to_thread(postgres.stop)
            async for answer in _answers(http, alert_id):
                assert answer.status_code == 503, (answer.request.url, answer.text)
                assert answer.headers["retry-after"] == "2"
                assert "cannot be reached right now" in answer.text
                assert "Traceback" not in answer.text
                if answer.request.url.path in ("/alerts", "/portfolio"):
                    assert "Database unreachable" in answer.text  # the error page
                else:
                    assert answer.text.startswith("the database 'test")
            health = (await http.get("/healthz")).json()
            assert health["database"] == {"kind": "postgresql", "reachable": False}
            assert health["status"] == status  # the database is not the board's health
            # Prices never touch the database.
            exchange.trade("BTCUSDT", price="50000.50")
            await page.until(lambda e: 'data-price="50000.50000000"' in e.data)
            # A trade past the alert while the database is down: not stored, so not fired;
            # the alert stays armed for the next trade past it.
            exchange.trade("SOLUSDT", price="140")
            await page.until(lambda e: 'data-price="140.00000000"' in e.data)
            alerts = server.app.state.alerts
            await eventually(lambda: alert_id in alerts.armed)
            assert alerts.fired_count == 0

            await asyncio.to_thread(postgres.start)
            # Back by itself: the next call connects again.
            async with asyncio.timeout(WAIT):
                while (await http.get("/api/v1/alerts")).status_code != 200:
                    await asyncio.sleep(0.1)
            health = (await http.get("/healthz")).json()
            assert health["database"] == {"kind": "postgresql", "reachable": True}
            listed = (await http.get("/api/v1/alerts")).json()["alerts"]
            assert [(a["id"], a["state"]) for a in listed] == [(alert_id, "armed")]
            exchange.trade("SOLUSDT", price="141")
            await eventually(
                lambda: database.value("SELECT fired_price FROM alerts") == "141.00000000"
            )
            async for answer in _answers(http, alert_id):
                assert answer.status_code < 500, (answer.request.url, answer.text)
    finally:
        await asyncio.to_thread(postgres.remove)
