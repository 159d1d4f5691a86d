"""Pages, SSE, fragments, embeds and health, end to end through a real uvicorn and simulator."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time

import httpx
import pytest

from app.config import Settings
from app.demo import DemoExchange
from app.render import resource_dir
from tests.conftest import (
    MS,
    WAIT,
    LiveServer,
    both_paths,
    data_dir,
    eventually,
    find,
    on_path,
    open_sse,
    parse_html,
    root,
    run_server,
    settings_for,
)

pytestmark = pytest.mark.anyio
DEFAULT = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")


async def test_board_wires_one_connection_for_every_symbol(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    [board] = [e for e in parse_html(html) if "sse-connect" in e.attrs]
    assert board.attrs["sse-connect"] == "/sse?symbols=" + ",".join(DEFAULT)
    assert board.attrs["hx-ext"] == "sse"
    swaps = [e.attrs["sse-swap"] for e in parse_html(html) if "sse-swap" in e.attrs]
    # "alert": this client is on loopback and no token is set, so it is the owner.
    assert swaps == ["status", "alert", *(f"price-{s}" for s in DEFAULT)]
    articles = [e for e in parse_html(html) if e.tag == "article"]
    assert [a.attrs["data-symbol"] for a in articles] == list(DEFAULT)
    scripts = [e.attrs["src"] for e in parse_html(html) if e.tag == "script"]
    assert scripts == [
        "/static/vendor/htmx-2.0.11.min.js",
        "/static/vendor/htmx-ext-sse-2.2.4.js",
        "/static/app.js",
    ]
    assert not [e for e in parse_html(html) if "badge-demo" in e.classes or "ps-demo" in e.classes]


async def test_symbols_query_and_the_add_remove_form(http: httpx.AsyncClient) -> None:
    page = await http.get("/", params={"symbols": "ethusdt, btcusdt,ETHUSDT"})
    assert page.status_code == 200
    assert [a.attrs["data-symbol"] for a in parse_html(page.text) if a.tag == "article"] == [
        "ETHUSDT",
        "BTCUSDT",
    ]
    removes = [e.attrs["href"] for e in parse_html(page.text) if "remove" in e.classes]
    assert removes == ["/?symbols=BTCUSDT", "/?symbols=ETHUSDT"]
    [hidden] = find(page.text, name="symbols")
    assert hidden.attrs["value"] == "ETHUSDT,BTCUSDT"

    added = await http.get("/", params={"symbols": "ETHUSDT,BTCUSDT", "add": " solusdt "})
    assert added.status_code == 303
    assert added.headers["location"] == "/?symbols=ETHUSDT,BTCUSDT,SOLUSDT"

    bad = await http.get("/", params={"symbols": "ETHUSDT", "add": "NOPE"})
    assert bad.status_code == 400
    [error] = [e for e in parse_html(bad.text) if "form-error" in e.classes]
    assert error.text == "unknown symbol 'NOPE': Binance does not list it"
    assert [a.attrs["data-symbol"] for a in parse_html(bad.text) if a.tag == "article"] == [
        "ETHUSDT"
    ]


@pytest.mark.parametrize(
    ("path", "sentence"),
    [
        ("/?symbols=FOOBAR", "unknown symbol 'FOOBAR': Binance does not list it"),
        ("/sse?symbols=BTCUSDT,NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        (
            "/sse",
            "no topics given: ask for some, like ?topics=price:BTCUSDT,book:BTCUSDT "
            "or ?symbols=BTCUSDT",
        ),
        (
            "/sse?symbols=" + ",".join(["BTCUSDT"] * 51),
            "too many topics (51): at most 50 per stream",
        ),
        (
            "/sse?topics=book:BTCUSDT,chart:BTCUSDT:2x",
            "unknown interval '2x': use one of 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, "
            "1d, 3d, 1w, 1M",
        ),
        (
            "/sse?topics=depth:BTCUSDT",
            "unknown topic kind 'depth' in 'depth:BTCUSDT': use one of price, book, trades, "
            "chart, like book:BTCUSDT",
        ),
        ("/sse?topics=trades:NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        ("/fragment/book:NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        (
            "/fragment/chart:BTCUSDT",
            "malformed topic 'chart:BTCUSDT': a chart needs an interval, like chart:BTCUSDT:1m",
        ),
        (
            "/market/BTCUSDT?interval=1y",
            "unknown interval '1y': use one of 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h, "
            "1d, 3d, 1w, 1M",
        ),
        ("/market/NOPE", "unknown symbol 'NOPE': Binance does not list it"),
        (
            "/fragment/BTC-USDT",
            "malformed symbol 'BTC-USDT': use letters and digits only, "
            "at most 20 characters, like BTCUSDT",
        ),
        (
            "/embed/%3Cscript%3E",
            "malformed symbol '<script>': use letters and digits only, "
            "at most 20 characters, like BTCUSDT",
        ),
    ],
)
async def test_bad_input_gets_a_400_with_a_sentence(
    http: httpx.AsyncClient, path: str, sentence: str
) -> None:
    response = await http.get(path)
    assert response.status_code == 400
    if response.headers["content-type"].startswith("text/html"):
        [p] = [e for e in parse_html(response.text) if e.tag == "p" and not e.attrs][:1]
        assert p.text == sentence
        assert "<script>" not in response.text
    else:
        assert response.text == sentence


async def test_sse_snapshot_then_live_updates(
    live: LiveServer, http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async with open_sse(http, "/sse?symbols=BTCUSDT,ETHUSDT") as events:
        first = [await events.next() for _ in range(3)]
        assert [e.event for e in first] == ["status", "price-BTCUSDT", "price-ETHUSDT"]
        assert first[0].retry == 2000
        await eventually(lambda: exchange.subscriptions() >= {"btcusdt@trade", "ethusdt@trade"})
        sent = exchange.trade("BTCUSDT", price="93700.12")
        update = await events.until(
            lambda e: (
                e.event == "price-BTCUSDT" and root(e.data).attrs.get("data-price") == sent["p"]
            )
        )
        article = root(update.data)
        assert article.attrs["data-event-time"] == str(sent["E"])
        assert "\n" not in update.data


async def test_fragment_waits_for_a_first_price(
    http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    async def tick_when_subscribed() -> None:
        await eventually(lambda: "solusdt@ticker" in exchange.subscriptions())
        exchange.ticker("SOLUSDT")

    ticking = asyncio.create_task(tick_when_subscribed())
    response = await http.get("/fragment/solusdt")
    await ticking
    assert response.status_code == 200
    article = root(response.text)
    assert article.attrs["data-symbol"] == "SOLUSDT"
    assert (
        article.attrs["data-price"]
        == exchange.market.ticker_payload(exchange.market.instruments["SOLUSDT"], 0)["c"]
    )


async def test_embed_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/embed/ethusdt")
    assert response.status_code == 200
    [board] = [e for e in parse_html(response.text) if "sse-connect" in e.attrs]
    assert board.attrs["sse-connect"] == "/sse?symbols=ETHUSDT"
    assert [e.attrs["sse-swap"] for e in parse_html(response.text) if "sse-swap" in e.attrs] == [
        "price-ETHUSDT",
        "status",
    ]


async def test_healthz_reports_upstream_and_streams(
    http: httpx.AsyncClient, exchange: DemoExchange
) -> None:
    idle = (await http.get("/healthz")).json()
    assert idle["status"] == "ok" and idle["upstream"]["state"] == "idle"
    assert idle["streams"] == [] and idle["topics"] == []
    assert idle["symbols"]["age_s"] < 60
    assert {k: v for k, v in idle["symbols"].items() if k != "age_s"} == {
        "source": "exchangeInfo",
        "count": 20,
        "last_error": None,
    }
    async with open_sse(http, "/sse?symbols=BTCUSDT") as events:
        await events.next()
        await eventually(lambda: exchange.subscriptions() == {"btcusdt@trade", "btcusdt@ticker"})
        exchange.trade("BTCUSDT")
        await events.until(lambda e: e.event == "price-BTCUSDT" and "data-price" in e.data)
        health = (await http.get("/healthz")).json()
    assert health["upstream"]["state"] == "live"
    assert health["upstream"]["connections"] == 1
    assert health["streams"] == ["btcusdt@ticker", "btcusdt@trade"]
    assert health["topics"] == ["price:BTCUSDT"]
    assert health["upstream"]["shards"][0]["connected_for_s"] >= 0
    assert health["rest"]["calls"]["/api/v3/exchangeInfo"] == 1
    assert 0 <= health["upstream"]["last_message_age"] < 5
    assert health["viewers"] == 1
    debug = await http.get("/debug")
    assert "btcusdt@trade" in debug.text


@pytest.mark.parametrize(
    ("path", "events"),
    [
        ("/?symbols=BTCUSDT,ETHUSDT", 3),
        ("/market/BTCUSDT?interval=15m", 5),
        ("/embed/BTCUSDT,ETHUSDT?view=trades", 3),
    ],
)
async def test_every_event_the_server_sends_has_a_target(
    http: httpx.AsyncClient, path: str, events: int
) -> None:
    page = (await http.get(path)).text
    targets = {e.attrs["sse-swap"] for e in parse_html(page) if "sse-swap" in e.attrs}
    [board] = [e for e in parse_html(page) if "sse-connect" in e.attrs]
    async with open_sse(http, board.attrs["sse-connect"] or "") as reader:
        names = {(await reader.next()).event for _ in range(events)}
    # Every event has a target; the only target without an event yet is the owner's "alert".
    assert names <= targets and targets - names <= {"alert"}


async def test_vendored_scripts_are_the_pinned_releases(http: httpx.AsyncClient) -> None:
    # sha256 of the files in the npm tarballs htmx.org@2.0.11 and htmx-ext-sse@2.2.4.
    pinned = {
        "vendor/htmx-2.0.11.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac"
        "69b8a364f77929f45c13476b4000f717",
        "vendor/htmx-ext-sse-2.2.4.js": "3b5992a541619babefc4c169505af474"
        "df5c3039da51e59b96ccf9241ecd61d2",
    }
    for path, digest in pinned.items():
        response = await http.get(f"/static/{path}")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == digest
        assert (resource_dir("static") / path).read_bytes() == response.content
    assert (resource_dir("static") / "vendor/htmx-2.0.11.LICENSE").is_file()
    assert (resource_dir("static") / "vendor/htmx-ext-sse-2.2.4.LICENSE").is_file()


async def test_demo_mode_labels_every_price() -> None:
    settings = Settings(
        demo=True, port=0, log_level="warning", grace_period=0.2, data_dir=data_dir()
    )
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        page = await http.get("/")
        assert [e.text for e in parse_html(page.text) if "badge-demo" in e.classes] == [
            "DEMO · simulated prices"
        ]
        assert "DEMO" in page.text.split("<title>")[1].split("</title>")[0]
        async with open_sse(http, "/sse?symbols=BTCUSDT") as events:
            live = await events.until(
                lambda e: e.event == "price-BTCUSDT" and "data-price" in e.data
            )
        assert [e.text for e in parse_html(live.data) if "ps-demo" in e.classes] == ["DEMO"]
        embed = await http.get("/embed/BTCUSDT")
        assert [e.text for e in parse_html(embed.text) if "ps-demo" in e.classes] == ["DEMO"]
        health = (await http.get("/healthz")).json()
        assert health["demo"] is True


@both_paths
async def test_shutdown_ends_open_streams_promptly(exchange: DemoExchange, direct: bool) -> None:
    async with run_server(settings_for(exchange, direct_writes=direct)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
            streams = [open_sse(http, "/sse?symbols=BTCUSDT") for _ in range(5)]
            readers = [await s.__aenter__() for s in streams]
            for r in readers:
                await r.next()
            await eventually(lambda: on_path(server, direct, 5))
            started = time.monotonic()
            server.server.should_exit = True
            for r in readers:
                with pytest.raises(StopAsyncIteration):
                    async with asyncio.timeout(WAIT):
                        while True:
                            await r.next()
            for s in streams:
                await s.__aexit__(None, None, None)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1000 * MS


async def test_starts_without_the_symbol_list_and_says_so(exchange: DemoExchange) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        settings = settings_for(exchange, rest=nowhere)
        async with (
            run_server(settings) as server,
            httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
        ):
            health = (await http.get("/healthz")).json()
            assert health["status"] == "degraded"
            assert health["symbols"]["source"] == "format-only"
            assert "ConnectError" in health["symbols"]["last_error"]
            # Checked by format only: any well-formed name passes, a malformed one does not.
            assert (await http.get("/embed/NEWCOINUSDT")).status_code == 200
            assert (await http.get("/fragment/NEW-COIN")).status_code == 400


@both_paths
async def test_keepalive_comments_flow_on_a_quiet_stream(
    exchange: DemoExchange, direct: bool
) -> None:
    async with (
        run_server(settings_for(exchange, sse_ping=0.2, direct_writes=direct)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        async with http.stream("GET", "/sse?symbols=BTCUSDT") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            lines = response.aiter_lines()
            await eventually(lambda: on_path(server, direct, 1))
            async with asyncio.timeout(WAIT):
                while not (await anext(lines)).startswith(": ping"):
                    pass
