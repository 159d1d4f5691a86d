"""Embed options, framing headers and CORS, over HTTP (the browser suite shows them working)."""

from __future__ import annotations

import httpx
import pytest

from app.demo import DemoExchange
from tests.conftest import WAIT, parse_html, run_server, settings_for

pytestmark = pytest.mark.anyio


def policy(response: httpx.Response) -> dict[str, str]:
    parts = (
        p.strip().split(" ", 1) for p in response.headers["content-security-policy"].split(";")
    )
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


async def test_embed_options_shape_the_page(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/embed/BTCUSDT,ETHUSDT",
        params={
            "theme": "dark",
            "bg": "transparent",
            "view": "compact",
            "link": "https://example.com/x",
        },
    )
    assert response.status_code == 200
    elements = parse_html(response.text)
    assert elements[0].tag == "html" and elements[0].attrs["data-theme"] == "dark"
    [body] = [e for e in elements if e.tag == "body"]
    assert body.classes == {"embed", "transparent"}
    [board] = [e for e in elements if "sse-connect" in e.attrs]
    assert board.attrs["sse-connect"] == "/sse?symbols=BTCUSDT,ETHUSDT"
    assert "ps-compact" in board.classes
    [link] = [e for e in elements if "embed-link" in e.classes]
    assert (link.attrs["href"], link.attrs["target"], link.attrs["rel"]) == (
        "https://example.com/x",
        "_blank",
        "noopener",
    )


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        ({"theme": "neon"}, "theme 'neon' is not one of auto, light, dark"),
        ({"bg": "red"}, "bg 'red' is not solid or transparent"),
        ({"view": "huge"}, "view 'huge' is not one of full, compact, chart, book, trades"),
        ({"link": "javascript:alert(1)"}, "link must be an http:// or https:// address"),
        ({"link": "https://" + "a" * 2100}, "link must be an http:// or https:// address"),
    ],
)
async def test_bad_embed_options_get_a_400(
    http: httpx.AsyncClient, query: dict[str, str], sentence: str
) -> None:
    response = await http.get("/embed/BTCUSDT", params=query)
    assert response.status_code == 400
    assert sentence in [e.text for e in parse_html(response.text) if e.tag == "p"]
    assert "javascript:alert" not in response.text


async def test_only_embeds_may_be_framed_by_others(http: httpx.AsyncClient) -> None:
    embed = await http.get("/embed/BTCUSDT")
    assert policy(embed)["frame-ancestors"] == "*"
    assert "x-frame-options" not in embed.headers
    for path in ("/", "/embed", "/?symbols=NOPE"):
        page = await http.get(path)
        assert policy(page)["frame-ancestors"] == "'self'"
        assert page.headers["x-frame-options"] == "SAMEORIGIN"
    board = await http.get("/")
    assert policy(board)["script-src"] == "'self'"
    assert board.headers["x-content-type-options"] == "nosniff"
    assert board.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_framing_and_cors_restricted_by_settings(exchange: DemoExchange) -> None:
    settings = settings_for(
        exchange, frame_ancestors=("https://blog.example",), cors_origins=("https://shop.example",)
    )
    async with (
        run_server(settings) as server,
        httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http,
    ):
        embed = await http.get("/embed/BTCUSDT")
        assert policy(embed)["frame-ancestors"] == "'self' https://blog.example"
        allowed = await http.get("/fragment/BTCUSDT", headers={"Origin": "https://shop.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = await http.get("/fragment/BTCUSDT", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            "/fragment/BTCUSDT",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "hx-request,hx-current-url",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"


async def test_sse_answers_any_origin_without_credentials(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "GET", "/sse?symbols=BTCUSDT", headers={"Origin": "https://anywhere.example"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


async def test_builder_snippets(http: httpx.AsyncClient, live: object) -> None:
    response = await http.get("/embed", params={"symbols": "ethusdt,solusdt", "view": "compact"})
    assert response.status_code == 200
    [iframe_snippet] = [
        e for e in parse_html(response.text) if e.attrs.get("id") == "snippet-iframe"
    ]
    base = str(http.base_url).rstrip("/")
    assert f'src="{base}/embed/ETHUSDT,SOLUSDT?view=compact"' in iframe_snippet.text
    [htmx_snippet] = [e for e in parse_html(response.text) if e.attrs.get("id") == "snippet-htmx"]
    assert f'sse-connect="{base}/sse?symbols=ETHUSDT,SOLUSDT" class="ps-compact"' in (
        htmx_snippet.text
    )
    assert f'<script src="{base}/static/embed.js"></script>' in htmx_snippet.text
    [preview] = [e for e in parse_html(response.text) if e.tag == "iframe"]
    assert preview.attrs["src"] == "/embed/ETHUSDT,SOLUSDT?view=compact"
    bad = await http.get("/embed", params={"symbols": "<b>"})
    assert bad.status_code == 400
    assert [e.text for e in parse_html(bad.text) if "form-error" in e.classes] == [
        "malformed symbol '<b>': use letters and digits only, at most 20 characters, like BTCUSDT"
    ]
